use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use crate::StoreError;

/// A store-wide, strictly increasing write counter (etcd's revision). Every write gets the next
/// one; it is the Kubernetes `resourceVersion`.
pub type Revision = i64;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision at which the key was created (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change, as delivered by [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put`, the new value. For `Delete`, the last value the key had, with `mod_revision`
    /// set to the revision of the deletion.
    pub kv: KeyValue,
    /// The value before this change; `None` for a create.
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// Keys in ascending byte order.
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// More keys match after the last one returned.
    pub more: bool,
}

/// A stream of events in revision order; it ends with an error if the watcher cannot continue
/// (for example [`StoreError::WatchLagged`]).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

/// The storage contract Skiff's API server is written against. Backends: SQLite (embedded
/// default) and etcd. Semantics follow etcd v3: a single store-wide revision, writes are
/// linearizable, and a watch delivers every change after a revision exactly once, in order.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys starting with `prefix`, in ascending order, strictly after `start_after` if given,
    /// at most `limit` of them (0 = all), as of `revision` (`None` = the latest).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError>;

    /// Create `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError>;

    /// Replace `key` if its current `mod_revision` is `expected`.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, StoreError>;

    /// Delete `key`, if `expected` is given only when its current `mod_revision` matches.
    /// Returns the deleted value with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;

    /// The revision of the latest write.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Forget history before `revision`: reads and watches at older revisions then fail with
    /// [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The oldest revision that can still be read or watched from.
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;

    /// The changes to keys under `prefix` with a revision in `(after, upto]`, in revision order
    /// (with their previous values). `Compacted` if `after` is older than the history kept.
    async fn history(&self, prefix: &str, after: Revision, upto: Revision) -> Result<Vec<Event>, StoreError>;

    /// Every change to keys under `prefix` with a revision greater than `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;
}

/// The smallest string greater than every string starting with `prefix` (etcd's range end), or
/// `None` when there is none (empty prefix, or all bytes 0xff).
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/").as_deref(), Some("/registry/pods0"));
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
    }
}
