//! The records a node knows, merged from the discovery service and from its
//! peers, and the gossip bundles it passes on.
//!
//! Peers forward the sealed records exactly as their authors sealed them,
//! so a record cannot be altered on the way, and every record is opened on
//! its own: a forged, foreign or expired record costs that record only.
//! The transport (over the mesh, to each peer) is networkd's:
//! `table.bundle(now)` out, `table.merge_bundle(bytes, now)` in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::bundle::{self, BundleError, MAX_BUNDLE_RECORDS};
use crate::record::{ClusterKeys, OpenError, PublicKey, Record, SealError, unix_ms};

/// Most peers a table holds: with the node's own record, a full bundle.
pub const MAX_PEERS: usize = MAX_BUNDLE_RECORDS - 1;

/// A record and the sealed bytes it came in.
#[derive(Debug, Clone)]
pub struct Entry {
    pub record: Record,
    pub sealed: Vec<u8>,
}

/// What merging one sealed record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// A node the table did not know.
    Added,
    /// A newer record of a known node.
    Updated,
    /// Not newer than what the table has.
    Stale,
    /// Claims to be this node: only this node writes its own record.
    Own,
    /// A new node, but the table is full of live records.
    Full,
}

/// What merging a bundle did, counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeReport {
    pub added: usize,
    pub updated: usize,
    pub stale: usize,
    pub own: usize,
    pub full: usize,
    /// Records that did not open (forged, foreign, expired, malformed).
    pub refused: usize,
    /// Set when the bundle's framing broke off; the records before the
    /// break were merged.
    pub framing: Option<BundleError>,
}

impl MergeReport {
    /// Whether the table changed.
    pub fn changed(&self) -> bool {
        self.added + self.updated > 0
    }
}

#[derive(Debug)]
pub struct AffiliateTable {
    keys: Arc<ClusterKeys>,
    own_node_id: String,
    own: Option<Entry>,
    peers: BTreeMap<String, Entry>,
    max_peers: usize,
    /// Node ids must be the base64 of the record's public key.
    ids_are_keys: bool,
}

impl AffiliateTable {
    /// An empty table for node `own_node_id` holding at most `max_peers`
    /// (capped at [`MAX_PEERS`]) other nodes.
    pub fn new(keys: Arc<ClusterKeys>, own_node_id: impl Into<String>, max_peers: usize) -> Self {
        Self {
            keys,
            own_node_id: own_node_id.into(),
            own: None,
            peers: BTreeMap::new(),
            max_peers: max_peers.min(MAX_PEERS),
            ids_are_keys: false,
        }
    }

    /// Refuses every record whose node id is not the base64 (standard,
    /// padded) of its own public key. With free-form ids, any member of
    /// the cluster could seal a newer record under another node's id and
    /// replace that node everywhere; tied to the key, a record can only
    /// speak for the key its author holds (and a node whose key changes is
    /// a new node). networkd's mesh uses this.
    pub fn ids_are_keys(mut self) -> Self {
        self.ids_are_keys = true;
        self
    }

    /// Seals this node's record and keeps it; returns the sealed bytes to
    /// publish on the discovery service.
    pub fn set_own(&mut self, record: Record) -> Result<&[u8], SealError> {
        if record.node_id != self.own_node_id {
            return Err(SealError::Invalid("the record is not this node's"));
        }
        let sealed = self.keys.seal(&record)?;
        Ok(&self.own.insert(Entry { record, sealed }).sealed)
    }

    pub fn own(&self) -> Option<&Entry> {
        self.own.as_ref()
    }

    /// The live records of other nodes at `now`, by node id.
    pub fn peers(&self, now: SystemTime) -> impl Iterator<Item = &Entry> {
        let now = unix_ms(now);
        self.peers
            .values()
            .filter(move |e| e.record.expires_ms() > now)
    }

    pub fn get(&self, node_id: &str) -> Option<&Entry> {
        self.peers.get(node_id)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Drops the records that expired by `now`; returns their node ids.
    pub fn expire(&mut self, now: SystemTime) -> Vec<String> {
        let now = unix_ms(now);
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, e)| e.record.expires_ms() <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.peers.remove(id);
        }
        gone
    }

    /// Opens one sealed record and merges it: the newest version of each
    /// node wins; this node's own record is never replaced from outside.
    pub fn merge_sealed(&mut self, sealed: &[u8], now: SystemTime) -> Result<Merged, OpenError> {
        let record = self.keys.open(sealed, now)?;
        if self.ids_are_keys && record.node_id != key_id(&record.public_key) {
            return Err(OpenError::Invalid(
                "the node id is not the record's public key",
            ));
        }
        if record.node_id == self.own_node_id {
            return Ok(Merged::Own);
        }
        if let Some(known) = self.peers.get_mut(&record.node_id) {
            if known.record.issued_ms >= record.issued_ms {
                return Ok(Merged::Stale);
            }
            *known = Entry {
                record,
                sealed: sealed.to_vec(),
            };
            return Ok(Merged::Updated);
        }
        if self.peers.len() >= self.max_peers && self.expire(now).is_empty() {
            return Ok(Merged::Full);
        }
        self.peers.insert(
            record.node_id.clone(),
            Entry {
                record,
                sealed: sealed.to_vec(),
            },
        );
        Ok(Merged::Added)
    }

    /// Merges every record in `records` (a list from the service).
    pub fn merge_all<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
        now: SystemTime,
    ) -> MergeReport {
        let mut report = MergeReport::default();
        for sealed in records {
            self.count(&mut report, sealed, now);
        }
        report
    }

    /// Merges a gossip bundle from a peer (or a list from the service, which
    /// has the same form).
    pub fn merge_bundle(&mut self, bytes: &[u8], now: SystemTime) -> MergeReport {
        let mut report = MergeReport::default();
        for item in bundle::decode(bytes) {
            match item {
                Ok(sealed) => self.count(&mut report, sealed, now),
                Err(e) => report.framing = Some(e),
            }
        }
        report
    }

    fn count(&mut self, report: &mut MergeReport, sealed: &[u8], now: SystemTime) {
        match self.merge_sealed(sealed, now) {
            Ok(Merged::Added) => report.added += 1,
            Ok(Merged::Updated) => report.updated += 1,
            Ok(Merged::Stale) => report.stale += 1,
            Ok(Merged::Own) => report.own += 1,
            Ok(Merged::Full) => report.full += 1,
            Err(_) => report.refused += 1,
        }
    }

    /// The bundle to send to peers: this node's record, then every live
    /// peer record, as sealed by their authors.
    pub fn bundle(&self, now: SystemTime) -> Vec<u8> {
        let own = self.own.iter().map(|e| e.sealed.as_slice());
        bundle::encode(own.chain(self.peers(now).map(|e| e.sealed.as_slice())))
    }
}

/// A node id bound to its key: the key in standard padded base64.
pub fn key_id(public_key: &PublicKey) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(public_key)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::tests::{ID, SECRET, now, record};

    fn keys() -> Arc<ClusterKeys> {
        Arc::new(ClusterKeys::new(&ID, &SECRET))
    }

    fn sealed(keys: &ClusterKeys, node: &str, issued: SystemTime) -> Vec<u8> {
        keys.seal(&record(keys, node, issued)).unwrap()
    }

    #[test]
    fn with_ids_bound_to_keys_a_member_cannot_take_another_nodes_id() {
        let k = keys();
        let mut t = AffiliateTable::new(k.clone(), "me", 10).ids_are_keys();
        // b's own record, its id bound to its key.
        let mut b = record(&k, "b", now());
        b.node_id = key_id(&b.public_key);
        assert_eq!(
            t.merge_sealed(&k.seal(&b).unwrap(), now()).unwrap(),
            Merged::Added
        );
        // m, another member, seals a newer record under b's id with its own key.
        let mut m = record(&k, "m", now() + Duration::from_secs(60));
        m.node_id = b.node_id.clone();
        assert!(matches!(
            t.merge_sealed(&k.seal(&m).unwrap(), now()),
            Err(OpenError::Invalid(_))
        ));
        assert_eq!(t.get(&b.node_id).unwrap().record.public_key, b.public_key);
        // Without the binding (the default), the same record would win.
        let mut free = AffiliateTable::new(k.clone(), "me", 10);
        free.merge_sealed(&k.seal(&b).unwrap(), now()).unwrap();
        assert_eq!(
            free.merge_sealed(&k.seal(&m).unwrap(), now()).unwrap(),
            Merged::Updated
        );
    }

    #[test]
    fn the_newest_version_of_a_node_wins() {
        let k = keys();
        let mut t = AffiliateTable::new(k.clone(), "me", 10);
        let old = sealed(&k, "b", now());
        let new = sealed(&k, "b", now() + Duration::from_secs(1));
        assert_eq!(t.merge_sealed(&new, now()).unwrap(), Merged::Added);
        assert_eq!(t.merge_sealed(&old, now()).unwrap(), Merged::Stale);
        assert_eq!(
            t.merge_sealed(&new, now()).unwrap(),
            Merged::Stale,
            "same version"
        );
        assert_eq!(t.get("b").unwrap().sealed, new);
        let newer = sealed(&k, "b", now() + Duration::from_secs(2));
        assert_eq!(t.merge_sealed(&newer, now()).unwrap(), Merged::Updated);
        assert_eq!(t.get("b").unwrap().sealed, newer);
    }

    #[test]
    fn nobody_else_writes_this_nodes_record() {
        let k = keys();
        let mut t = AffiliateTable::new(k.clone(), "me", 10);
        let mine = t.set_own(record(&k, "me", now())).unwrap().to_vec();
        let claim = sealed(&k, "me", now() + Duration::from_secs(60));
        assert_eq!(t.merge_sealed(&claim, now()).unwrap(), Merged::Own);
        assert_eq!(t.own().unwrap().sealed, mine);
        assert!(t.is_empty());
        assert!(matches!(
            t.set_own(record(&k, "someone", now())),
            Err(SealError::Invalid(_))
        ));
    }

    #[test]
    fn the_table_is_bounded_and_expiry_makes_room() {
        let k = keys();
        let mut t = AffiliateTable::new(k.clone(), "me", 2);
        for n in ["a", "b"] {
            assert_eq!(
                t.merge_sealed(&sealed(&k, n, now()), now()).unwrap(),
                Merged::Added
            );
        }
        let c = sealed(&k, "c", now() + Duration::from_secs(200));
        assert_eq!(t.merge_sealed(&c, now()).unwrap(), Merged::Full);
        assert_eq!(t.len(), 2);
        // a and b (ttl 300 s) are gone at +300 s; c (issued at +200 s) lives.
        let later = now() + Duration::from_secs(300);
        assert_eq!(t.merge_sealed(&c, later).unwrap(), Merged::Added);
        assert_eq!(t.len(), 1);
        assert_eq!(t.peers(later).count(), 1);
        assert_eq!(
            AffiliateTable::new(k, "me", usize::MAX).max_peers,
            MAX_PEERS
        );
    }

    #[test]
    fn expire_reports_who_left() {
        let k = keys();
        let mut t = AffiliateTable::new(k.clone(), "me", 10);
        t.merge_sealed(&sealed(&k, "a", now()), now()).unwrap();
        t.merge_sealed(&sealed(&k, "b", now() + Duration::from_secs(100)), now())
            .unwrap();
        assert!(t.expire(now()).is_empty());
        assert_eq!(
            t.expire(now() + Duration::from_secs(300)),
            vec!["a".to_string()]
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn two_peers_exchange_bundles_and_a_forged_record_costs_only_itself() {
        let k = keys();
        let intruder = ClusterKeys::new(&ID, &[3; 32]);
        let mut a = AffiliateTable::new(k.clone(), "a", 10);
        let mut b = AffiliateTable::new(k.clone(), "b", 10);
        a.set_own(record(&k, "a", now())).unwrap();
        b.set_own(record(&k, "b", now())).unwrap();
        // a learnt about c from the service while b could not reach it.
        a.merge_sealed(&sealed(&k, "c", now()), now()).unwrap();

        let mut forged = sealed(&k, "d", now());
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let foreign = sealed(&intruder, "e", now());
        let from_a = a.bundle(now());
        let mut bytes = bundle::encode(
            bundle::decode(&from_a)
                .map(Result::unwrap)
                .chain([forged.as_slice(), foreign.as_slice()]),
        );
        let report = b.merge_bundle(&bytes, now());
        assert_eq!(
            report,
            MergeReport {
                added: 2,
                refused: 2,
                ..Default::default()
            }
        );
        assert!(report.changed());
        assert!(b.get("a").is_some() && b.get("c").is_some());

        // b answers; a learns nothing new but sees its own record come back.
        let report = a.merge_bundle(&b.bundle(now()), now());
        assert_eq!((report.added, report.stale, report.own), (1, 1, 1));

        // A bundle cut short keeps what came before the cut.
        bytes.truncate(bytes.len() - 3);
        let mut fresh = AffiliateTable::new(k, "f", 10);
        let report = fresh.merge_bundle(&bytes, now());
        assert_eq!((report.added, report.refused), (2, 1));
        assert!(matches!(
            report.framing,
            Some(BundleError::TruncatedRecord { .. })
        ));
    }

    #[test]
    fn expired_records_are_neither_merged_nor_passed_on() {
        let k = keys();
        let mut t = AffiliateTable::new(k.clone(), "me", 10);
        t.merge_sealed(&sealed(&k, "a", now()), now()).unwrap();
        let later = now() + Duration::from_secs(300);
        assert_eq!(bundle::decode(&t.bundle(later)).count(), 0);
        assert!(matches!(
            t.merge_sealed(&sealed(&k, "b", now()), later),
            Err(OpenError::Expired { .. })
        ));
    }
}
