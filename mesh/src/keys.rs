//! The node's mesh identity: an X25519 key pair, made once and kept in a
//! file (on a node: [`KEY_FILE`] on STATE, so it survives reboots and the
//! node keeps its mesh address).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use ring::rand::SecureRandom as _;

/// Where a node keeps its key: on STATE.
pub const KEY_FILE: &str = "/run/slate/state/mesh.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the mesh key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the mesh key {path} is not 32 base64 bytes")]
    Malformed { path: PathBuf },
    #[error("generating a mesh key")]
    Random,
    #[error("writing the mesh key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: slate_common::fs::AtomicWriteError,
    },
}

/// The node's key pair.
#[derive(Clone)]
pub struct NodeKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for NodeKey {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.public_base64())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// A fresh key from the system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(Self::from_secret(bytes))
    }

    /// The key in `path`, or a new one written there (mode 0600,
    /// atomically) if there is no file. A file that is not a key is an
    /// error, never replaced: a new key would be a new mesh identity.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| KeyError::Malformed {
                        path: path.to_owned(),
                    })?;
                Ok(Self::from_secret(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                let text = format!(
                    "{}\n",
                    base64::engine::general_purpose::STANDARD.encode(key.secret.to_bytes())
                );
                slate_common::fs::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| {
                    KeyError::Write {
                        path: path.to_owned(),
                        source,
                    }
                })?;
                tracing::info!(
                    "created the mesh key {} ({})",
                    path.display(),
                    key.public_base64()
                );
                Ok(key)
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    pub fn public_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public.as_bytes())
    }

    /// The node's mesh address in the cluster (see
    /// [`slate_discovery::record::mesh_address`]).
    pub fn mesh_address(&self, cluster_id: &[u8; 32]) -> std::net::Ipv6Addr {
        slate_discovery::record::mesh_address(cluster_id, &self.public_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn created_once_0600_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.key");
        let first = NodeKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(first.public_bytes(), again.public_bytes());
        assert_eq!(first.mesh_address(&[7; 32]), again.mesh_address(&[7; 32]));
        assert!(
            !format!("{first:?}").contains(
                &base64::engine::general_purpose::STANDARD.encode(first.secret.to_bytes())
            )
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.key");
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            NodeKey::load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
    }
}
