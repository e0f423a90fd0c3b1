//! The embedded SQLite backend.
//!
//! Layout (one file, WAL mode):
//! - `log`: one row per write — the revision (the row id), the key, whether it was a delete, the
//!   key's create revision and the value (for a delete: the last value). This is the history that
//!   lists at a revision and watches from a revision read.
//! - `kv`: key → revision of its current row in `log`, so reads at the latest revision are an
//!   index lookup rather than a scan of history.
//! - `meta`: the compacted revision.
//!
//! Writes go to one writer thread that owns the write connection and commits whatever writes
//! have queued up in one transaction (group commit), then publishes their events in revision
//! order and answers each writer. A failed precondition fails only its own write. Reads use a
//! second connection (WAL lets them run beside writes).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::broadcast;

use crate::store::{prefix_end, Event, EventKind, KeyValue, ListResult, Revision, Store, WatchStream};
use crate::StoreError;

/// How hard SQLite syncs. `Normal` (the default) keeps every acknowledged write across a crash or
/// `kill -9` of the process; `Full` also across power loss, at the cost of an fsync per commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    #[default]
    Normal,
    Full,
}

#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// How many live events a watcher may fall behind before it must re-list.
    pub watch_buffer: usize,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::Normal,
            watch_buffer: 16 * 1024,
        }
    }
}

pub struct SqliteStore {
    inner: Arc<Inner>,
    /// Writes go to one writer thread, which commits whatever has queued up in one
    /// transaction (group commit): one commit and one wake-up for many writes.
    writes: std::sync::mpsc::Sender<WriteRequest>,
}

struct Inner {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    events: broadcast::Sender<Arc<Event>>,
}

/// Decides a key's next value from its current one: `Some` to put, `None` to delete, or an
/// error (a failed precondition) that leaves the key alone.
type WriteOp = Box<dyn FnOnce(Option<KeyValue>) -> Result<Option<Bytes>, StoreError> + Send>;

struct WriteRequest {
    key: String,
    op: WriteOp,
    reply: tokio::sync::oneshot::Sender<Result<Event, StoreError>>,
}

/// The most writes committed together.
const MAX_BATCH: usize = 256;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

fn open(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::backend(format!("open {}", path.display()), e))?;
    let sync = match sync {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=OFF;"
    ))
    .map_err(|e| StoreError::backend("configure sqlite", e))?;
    Ok(conn)
}

fn db_err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::backend(what, e)
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave SQLite inconsistent (the transaction rolls
    // back when dropped), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteStore {
    /// Open (creating if needed) the database at `opts.path`.
    pub fn open(opts: SqliteOptions) -> Result<Self, StoreError> {
        if let Some(dir) = opts.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::backend(format!("create {}", dir.display()), e))?;
            }
        }
        let writer = open(&opts.path, opts.synchronous)?;
        writer.execute_batch(SCHEMA).map_err(db_err("create schema"))?;
        let reader = open(&opts.path, opts.synchronous)?;
        let (events, _) = broadcast::channel(opts.watch_buffer.max(16));
        let inner = Arc::new(Inner {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            events,
        });
        let (writes, queue) = std::sync::mpsc::channel::<WriteRequest>();
        let w = inner.clone();
        // Ends when the store (the only sender) is dropped.
        std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    w.write_batch(batch);
                }
            })
            .map_err(|e| StoreError::backend("start the writer thread", e))?;
        Ok(Self { inner, writes })
    }

    /// Queue one write for the writer thread and wait for its commit.
    async fn write(&self, key: &str, op: WriteOp) -> Result<Event, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writes
            .send(WriteRequest {
                key: key.to_string(),
                op,
                reply,
            })
            .map_err(|_| StoreError::backend("write", std::io::Error::other("the writer thread has stopped")))?;
        answer
            .await
            .map_err(|_| StoreError::backend("write", std::io::Error::other("the writer thread dropped the write")))?
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::backend("store task failed", e))?
    }
}

/// The revision of the latest write. Read from AUTOINCREMENT's sequence, which never goes
/// back, rather than from the log: compaction may delete the newest row (a tombstone).
fn current_rev(conn: &Connection) -> Result<Revision, StoreError> {
    conn.query_row(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'log'), 0)",
        [],
        |r| r.get(0),
    )
    .map_err(db_err("read revision"))
}

fn compacted_rev(conn: &Connection) -> Result<Revision, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| r.get(0))
        .optional()
        .map_err(db_err("read compacted revision"))?
        .unwrap_or(0))
}

fn row_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: r.get(0)?,
        mod_revision: r.get(1)?,
        create_revision: r.get(2)?,
        value: Bytes::from(r.get::<_, Vec<u8>>(3)?),
    })
}

fn get_current(conn: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    conn.prepare_cached(
        "SELECT l.key, l.rev, l.create_rev, l.value FROM kv JOIN log l ON l.rev = kv.rev WHERE kv.key = ?1",
    )
    .and_then(|mut s| s.query_row([key], row_kv).optional())
    .map_err(db_err("get"))
}

impl Inner {
    /// Commit a batch of writes in one transaction, in order, then publish their events (in
    /// revision order, before the next batch) and answer each writer. A failed precondition
    /// fails only its own write; a database error fails every write of the batch, since the
    /// transaction rolls back.
    fn write_batch(&self, batch: Vec<WriteRequest>) {
        let mut conn = lock(&self.writer);
        // IMMEDIATE: take the write lock up front instead of upgrading a read transaction.
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                for r in batch {
                    let _ = r
                        .reply
                        .send(Err(StoreError::backend("begin", std::io::Error::other(msg.clone()))));
                }
                return;
            }
        };
        let mut results = Vec::with_capacity(batch.len());
        let mut failed: Option<String> = None;
        for r in batch {
            let res = if failed.is_some() {
                Err(StoreError::backend(
                    "write",
                    std::io::Error::other("an earlier write of the batch failed"),
                ))
            } else {
                Self::apply_one(&tx, &r.key, r.op)
            };
            if let Err(e @ StoreError::Backend { .. }) = &res {
                failed.get_or_insert_with(|| e.to_string());
            }
            results.push((r.reply, res));
        }
        let committed = match failed {
            Some(why) => Err(why),
            None => tx.commit().map_err(|e| e.to_string()),
        };
        for (reply, res) in results {
            let res = match (res, &committed) {
                (Ok(ev), Ok(())) => {
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(Arc::new(ev.clone()));
                    Ok(ev)
                }
                (Ok(_), Err(why)) | (Err(StoreError::Backend { .. }), Err(why)) => {
                    Err(StoreError::backend("commit", std::io::Error::other(why.clone())))
                }
                (Err(e), _) => Err(e),
            };
            let _ = reply.send(res);
        }
    }

    /// One write inside the batch's transaction.
    fn apply_one(tx: &rusqlite::Transaction<'_>, key: &str, op: WriteOp) -> Result<Event, StoreError> {
        let prev = get_current(tx, key)?;
        let new_value = op(prev.clone())?;
        let event = match new_value {
            Some(value) => {
                let create_rev = prev.as_ref().map(|p| p.create_revision);
                tx.prepare_cached(
                    "INSERT INTO log (key, deleted, create_rev, value) VALUES (?1, 0, COALESCE(?2, 0), ?3)",
                )
                .and_then(|mut s| s.execute(params![key, create_rev, value.as_ref()]))
                .map_err(db_err("insert"))?;
                let rev = tx.last_insert_rowid();
                if create_rev.is_none() {
                    tx.prepare_cached("UPDATE log SET create_rev = rev WHERE rev = ?1")
                        .and_then(|mut s| s.execute([rev]))
                        .map_err(db_err("insert"))?;
                }
                tx.prepare_cached(
                    "INSERT INTO kv (key, rev) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET rev = excluded.rev",
                )
                .and_then(|mut s| s.execute(params![key, rev]))
                .map_err(db_err("insert"))?;
                let kv = KeyValue {
                    key: key.to_string(),
                    value,
                    create_revision: create_rev.unwrap_or(rev),
                    mod_revision: rev,
                };
                Event {
                    kind: EventKind::Put,
                    kv,
                    prev,
                }
            }
            None => {
                let prev = prev.ok_or_else(|| StoreError::NotFound { key: key.to_string() })?;
                tx.prepare_cached("INSERT INTO log (key, deleted, create_rev, value) VALUES (?1, 1, ?2, ?3)")
                    .and_then(|mut s| s.execute(params![key, prev.create_revision, prev.value.as_ref()]))
                    .map_err(db_err("delete"))?;
                let rev = tx.last_insert_rowid();
                tx.prepare_cached("DELETE FROM kv WHERE key = ?1")
                    .and_then(|mut s| s.execute([key]))
                    .map_err(db_err("delete"))?;
                let kv = KeyValue {
                    mod_revision: rev,
                    ..prev.clone()
                };
                Event {
                    kind: EventKind::Delete,
                    kv,
                    prev: Some(prev),
                }
            }
        };
        Ok(event)
    }
}

/// The newest row of each key at a revision, in key order, streamed from the (key, rev) index
/// and stopped at the limit: the subquery runs as a co-routine and the CROSS JOIN keeps SQLite
/// from materialising and sorting every key in the range, which made each page of a large
/// list cost the whole range (a 50,000-pod relist in pages of 500 took minutes).
const PAGE_AT_REVISION: &str = "SELECT l.key, l.rev, l.create_rev, l.value FROM \
     (SELECT key, MAX(rev) AS r FROM log WHERE key >= ?1 AND key < ?2 AND rev <= ?3 GROUP BY key ORDER BY key) m \
     CROSS JOIN log l ON l.rev = m.r WHERE l.deleted = 0 LIMIT ?4";

fn list_rows(
    conn: &Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    revision: Option<Revision>,
) -> Result<ListResult, StoreError> {
    let current = current_rev(conn)?;
    let compacted = compacted_rev(conn)?;
    let at = match revision {
        Some(r) if r > current => return Err(StoreError::FutureRevision { requested: r, current }),
        Some(r) if r < compacted => {
            return Err(StoreError::Compacted {
                requested: r,
                compacted,
            })
        }
        Some(r) => r,
        None => current,
    };
    // Key range [lo, hi): the prefix range, narrowed by the continue key.
    let lo = match start_after {
        Some(s) if s >= prefix => format!("{s}\0"),
        _ => prefix.to_string(),
    };
    let hi = prefix_end(prefix).unwrap_or_else(|| "\u{7f}".repeat(8));
    // Fetch one more than asked to learn whether there is more.
    let fetch = if limit == 0 { -1 } else { (limit + 1) as i64 };
    let mut kvs = if at == current {
        let mut stmt = conn
            .prepare_cached(
                "SELECT l.key, l.rev, l.create_rev, l.value FROM kv JOIN log l ON l.rev = kv.rev \
                 WHERE kv.key >= ?1 AND kv.key < ?2 ORDER BY kv.key LIMIT ?3",
            )
            .map_err(db_err("list"))?;
        let rows = stmt.query_map(params![lo, hi, fetch], row_kv).map_err(db_err("list"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("list"))?
    } else {
        let mut stmt = conn.prepare_cached(PAGE_AT_REVISION).map_err(db_err("list"))?;
        let rows = stmt
            .query_map(params![lo, hi, at, fetch], row_kv)
            .map_err(db_err("list"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("list"))?
    };
    let more = limit > 0 && kvs.len() > limit;
    kvs.truncate(if limit == 0 { kvs.len() } else { limit });
    Ok(ListResult {
        kvs,
        revision: at,
        more,
    })
}

/// History after `after` for keys under `prefix`, as events (with their previous values).
fn history(conn: &Connection, prefix: &str, after: Revision, upto: Revision) -> Result<Vec<Event>, StoreError> {
    let hi = prefix_end(prefix).unwrap_or_else(|| "\u{7f}".repeat(8));
    let mut stmt = conn
        .prepare_cached(
            "SELECT l.key, l.rev, l.create_rev, l.value, l.deleted, \
                    p.rev, p.create_rev, p.value, p.deleted \
             FROM log l LEFT JOIN log p ON p.rev = (SELECT MAX(rev) FROM log WHERE key = l.key AND rev < l.rev) \
             WHERE l.rev > ?1 AND l.rev <= ?2 AND l.key >= ?3 AND l.key < ?4 ORDER BY l.rev",
        )
        .map_err(db_err("watch history"))?;
    let rows = stmt
        .query_map(params![after, upto, prefix, hi], |r| {
            let kv = row_kv(r)?;
            let deleted: bool = r.get(4)?;
            let prev_rev: Option<Revision> = r.get(5)?;
            let prev_deleted: Option<bool> = r.get(8)?;
            let prev = match (prev_rev, prev_deleted) {
                (Some(rev), Some(false)) => Some(KeyValue {
                    key: kv.key.clone(),
                    mod_revision: rev,
                    create_revision: r.get(6)?,
                    value: Bytes::from(r.get::<_, Vec<u8>>(7)?),
                }),
                _ => None,
            };
            Ok(if deleted {
                // A delete row carries the last value; its previous state is that value at the
                // revision before.
                let prev = prev.unwrap_or_else(|| kv.clone());
                Event {
                    kind: EventKind::Delete,
                    kv,
                    prev: Some(prev),
                }
            } else {
                Event {
                    kind: EventKind::Put,
                    kv,
                    prev,
                }
            })
        })
        .map_err(db_err("watch history"))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err("watch history"))
}

/// History after `after` up to `upto` (or the current revision), unless compacted away.
fn history_since(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    upto: Option<Revision>,
) -> Result<Vec<Event>, StoreError> {
    let compacted = compacted_rev(conn)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let upto = match upto {
        Some(u) => u,
        None => current_rev(conn)?,
    };
    history(conn, prefix, after, upto)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |i| get_current(&lock(&i.reader), &key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        self.blocking(move |i| {
            let mut conn = lock(&i.reader);
            // One read transaction so the revision and the rows agree.
            let tx = conn.transaction().map_err(db_err("begin"))?;
            let res = list_rows(&tx, &prefix, start_after.as_deref(), limit, revision);
            drop(tx);
            res
        })
        .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        let k = key.to_string();
        self.write(
            key,
            Box::new(move |prev| match prev {
                Some(_) => Err(StoreError::AlreadyExists { key: k }),
                None => Ok(Some(value)),
            }),
        )
        .await
        .map(|e| e.kv)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, StoreError> {
        let k = key.to_string();
        self.write(
            key,
            Box::new(move |prev| match prev {
                None => Err(StoreError::NotFound { key: k }),
                Some(p) if p.mod_revision != expected => Err(StoreError::Conflict {
                    key: k,
                    expected,
                    actual: p.mod_revision,
                }),
                Some(_) => Ok(Some(value)),
            }),
        )
        .await
        .map(|e| e.kv)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let k = key.to_string();
        self.write(
            key,
            Box::new(move |prev| match (prev, expected) {
                (None, _) => Err(StoreError::NotFound { key: k }),
                (Some(p), Some(e)) if p.mod_revision != e => Err(StoreError::Conflict {
                    key: k,
                    expected: e,
                    actual: p.mod_revision,
                }),
                (Some(_), _) => Ok(None),
            }),
        )
        .await
        .map(|e| e.kv)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.blocking(|i| current_rev(&lock(&i.reader))).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.blocking(move |i| {
            let mut conn = lock(&i.writer);
            let tx = conn.transaction().map_err(db_err("begin"))?;
            let current = current_rev(&tx)?;
            let compacted = compacted_rev(&tx)?;
            if revision > current {
                return Err(StoreError::FutureRevision { requested: revision, current });
            }
            if revision <= compacted {
                return Err(StoreError::Compacted { requested: revision, compacted });
            }
            // Rows at or before `revision` that a later row (also at or before it) supersedes,
            // and tombstones at or before it, are no longer needed to read at `revision`.
            tx.execute(
                "DELETE FROM log WHERE rev <= ?1 AND (deleted = 1 OR rev < \
                 (SELECT MAX(rev) FROM log l2 WHERE l2.key = log.key AND l2.rev <= ?1))",
                [revision],
            )
            .map_err(db_err("compact"))?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('compacted', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [revision],
            )
            .map_err(db_err("compact"))?;
            tx.commit().map_err(db_err("commit"))
        })
        .await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.blocking(|i| compacted_rev(&lock(&i.reader))).await
    }

    async fn history(&self, prefix: &str, after: Revision, upto: Revision) -> Result<Vec<Event>, StoreError> {
        let p = prefix.to_string();
        self.blocking(move |i| history_since(&lock(&i.reader), &p, after, Some(upto)))
            .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading history, so nothing falls between the two.
        let rx = self.inner.events.subscribe();
        let p = prefix.to_string();
        let backlog = self
            .blocking(move |i| history_since(&lock(&i.reader), &p, after, None))
            .await?;
        let last = backlog.last().map(|e| e.revision()).unwrap_or(after);
        let live = futures::stream::unfold(Some((rx, last, prefix.to_string())), |state| async move {
            let (mut rx, last, prefix) = state?;
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.revision() <= last || !ev.kv.key.starts_with(&prefix) => continue,
                    Ok(ev) => {
                        let rev = ev.revision();
                        return Some((Ok(Event::clone(&ev)), Some((rx, rev, prefix))));
                    }
                    // Report the lag once, then end: the watcher must re-list.
                    Err(broadcast::error::RecvError::Lagged(_)) => return Some((Err(StoreError::WatchLagged), None)),
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let stream = futures::stream::iter(backlog.into_iter().map(Ok)).chain(live);
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_at_a_revision_does_not_read_the_whole_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("s.db"))).expect("open");
        let conn = lock(&store.inner.reader);
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PAGE_AT_REVISION}"))
            .expect("plan");
        let plan: Vec<String> = stmt
            .query_map(params!["/a/", "/a0", 10, 500], |r| r.get::<_, String>(3))
            .expect("plan rows")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        assert!(
            !plan
                .iter()
                .any(|p| p.contains("MATERIALIZE") || p.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }
}
