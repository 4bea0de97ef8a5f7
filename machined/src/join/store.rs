//! Where join tokens and registrations are kept: the cluster's etcd, so
//! that every control-plane node sees the same and a registration survives
//! any one of them. Tests of the registry's rules use [`Store::memory`],
//! which keeps etcd's one property they rely on: a write conditional on
//! the revision the writer read.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::etcd::{Etcd, EtcdClient, EtcdError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

#[derive(Clone)]
pub struct Store(Inner);

#[derive(Clone)]
enum Inner {
    Etcd {
        etcd: Arc<Etcd>,
        /// One connection, made again after a failure.
        client: Arc<tokio::sync::Mutex<Option<EtcdClient>>>,
    },
    Memory(Arc<std::sync::Mutex<Memory>>),
}

/// Key → (value, revision), and the store's last revision.
type Memory = (BTreeMap<String, (Vec<u8>, i64)>, i64);

impl Store {
    pub fn etcd(etcd: Arc<Etcd>) -> Self {
        Self(Inner::Etcd {
            etcd,
            client: Arc::default(),
        })
    }

    pub fn memory() -> Self {
        Self(Inner::Memory(Arc::default()))
    }

    /// Runs `call` on the shared connection (made on first use, through
    /// any member this node knows); calls run side by side, and a failed
    /// one drops the connection so the next call dials again.
    async fn with_client<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut EtcdClient) -> Result<T, EtcdError>,
    {
        let Inner::Etcd { etcd, client } = &self.0 else {
            unreachable!("with_client is for etcd only");
        };
        let mut connected = {
            let mut guard = client.lock().await;
            match &*guard {
                Some(c) => c.clone(),
                None => {
                    let made = etcd.connect_cluster().await?;
                    *guard = Some(made.clone());
                    made
                }
            }
        };
        let result = call(&mut connected).await;
        if result.is_err() {
            *client.lock().await = None;
        }
        Ok(result?)
    }

    fn memory_map(&self) -> Option<std::sync::MutexGuard<'_, Memory>> {
        match &self.0 {
            Inner::Memory(m) => Some(m.lock().unwrap_or_else(|e| e.into_inner())),
            Inner::Etcd { .. } => None,
        }
    }

    /// The value of `key` and its revision.
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        if let Some(map) = self.memory_map() {
            return Ok(map.0.get(key).cloned());
        }
        self.with_client(async |c| c.get(key).await).await
    }

    /// Every key under `prefix` with its value, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if let Some(map) = self.memory_map() {
            return Ok(map
                .0
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect());
        }
        self.with_client(async |c| c.list(prefix).await).await
    }

    /// Writes `value` if `key` is still at `revision` (0: absent).
    pub async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        revision: i64,
    ) -> Result<bool, StoreError> {
        if let Some(mut map) = self.memory_map() {
            let current = map.0.get(key).map_or(0, |(_, r)| *r);
            if current != revision {
                return Ok(false);
            }
            map.1 += 1;
            let next = map.1;
            map.0.insert(key.to_owned(), (value, next));
            return Ok(true);
        }
        self.with_client(async |c| c.put_if(key, value, revision).await)
            .await
    }

    /// Deletes `key`; whether it was there.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        if let Some(mut map) = self.memory_map() {
            return Ok(map.0.remove(key).is_some());
        }
        self.with_client(async |c| c.delete(key).await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_on_a_stale_revision_is_refused() {
        let store = Store::memory();
        assert!(store.put_if("/a/1", b"one".to_vec(), 0).await.unwrap());
        assert!(
            !store.put_if("/a/1", b"two".to_vec(), 0).await.unwrap(),
            "exists already"
        );
        let (value, rev) = store.get("/a/1").await.unwrap().unwrap();
        assert_eq!(value, b"one");
        assert!(store.put_if("/a/1", b"two".to_vec(), rev).await.unwrap());
        assert!(
            !store.put_if("/a/1", b"three".to_vec(), rev).await.unwrap(),
            "stale"
        );
        store.put_if("/b/1", b"x".to_vec(), 0).await.unwrap();
        assert_eq!(store.list("/a/").await.unwrap().len(), 1);
        assert!(store.delete("/a/1").await.unwrap());
        assert!(!store.delete("/a/1").await.unwrap());
    }
}
