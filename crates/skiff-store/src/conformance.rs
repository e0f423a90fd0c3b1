//! The backend conformance suite: every [`Store`] implementation must pass all of it.
//!
//! Use [`store_conformance_tests!`] in a backend's test file with an async factory that returns
//! a fresh, empty store; it expands to one `#[tokio::test]` per case.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{EventKind, Store, StoreError};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(w: &mut crate::WatchStream) -> crate::Event {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch event within 5s")
        .expect("watch stream still open")
        .expect("watch event, not error")
}

pub async fn create_get_update_delete(s: impl Store) {
    let c = s.create("/a/1", b("one")).await.expect("create");
    assert_eq!(c.create_revision, c.mod_revision);
    assert!(matches!(
        s.create("/a/1", b("again")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let got = s.get("/a/1").await.expect("get").expect("present");
    assert_eq!(got, c);
    let u = s.update("/a/1", b("two"), c.mod_revision).await.expect("update");
    assert!(u.mod_revision > c.mod_revision);
    assert_eq!(u.create_revision, c.create_revision);
    assert_eq!(s.get("/a/1").await.expect("get").expect("present").value, b("two"));
    let d = s.delete("/a/1", Some(u.mod_revision)).await.expect("delete");
    assert_eq!(d.value, b("two"));
    assert!(d.mod_revision > u.mod_revision);
    assert_eq!(s.get("/a/1").await.expect("get"), None);
    assert!(matches!(s.delete("/a/1", None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(
        s.update("/a/1", b("x"), d.mod_revision).await,
        Err(StoreError::NotFound { .. })
    ));
    // Re-creating starts a new life: a new create revision.
    let again = s.create("/a/1", b("three")).await.expect("re-create");
    assert!(again.create_revision > c.create_revision);
}

pub async fn compare_and_swap_conflicts(s: impl Store) {
    let c = s.create("/k", b("v1")).await.expect("create");
    s.update("/k", b("v2"), c.mod_revision)
        .await
        .expect("first update wins");
    match s.update("/k", b("v3"), c.mod_revision).await {
        Err(StoreError::Conflict { expected, actual, .. }) => {
            assert_eq!(expected, c.mod_revision);
            assert!(actual > expected);
        }
        other => panic!("stale update must conflict, got {other:?}"),
    }
    assert!(matches!(
        s.delete("/k", Some(c.mod_revision)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.get("/k").await.expect("get").expect("present").value, b("v2"));
}

pub async fn revisions_are_global_and_increasing(s: impl Store) {
    let r0 = s.current_revision().await.expect("rev");
    let a = s.create("/x/a", b("1")).await.expect("create");
    let bb = s.create("/y/b", b("1")).await.expect("create");
    assert!(a.mod_revision > r0);
    assert!(bb.mod_revision > a.mod_revision);
    assert_eq!(s.current_revision().await.expect("rev"), bb.mod_revision);
}

pub async fn list_prefix_order_and_pages(s: impl Store) {
    for name in ["c", "a", "b", "d"] {
        s.create(&format!("/p/{name}"), b(name)).await.expect("create");
    }
    s.create("/pz", b("other prefix")).await.expect("create");
    s.create("/o/a", b("other prefix")).await.expect("create");
    let all = s.list("/p/", None, 0, None).await.expect("list");
    let keys: Vec<_> = all.kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/p/a", "/p/b", "/p/c", "/p/d"]);
    assert!(!all.more);
    assert_eq!(all.revision, s.current_revision().await.expect("rev"));

    let p1 = s.list("/p/", None, 2, None).await.expect("page 1");
    assert_eq!(
        p1.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/p/a", "/p/b"]
    );
    assert!(p1.more);
    // A write between pages must not show in a page read at the first page's revision.
    s.create("/p/bb", b("late")).await.expect("create");
    s.delete("/p/c", None).await.expect("delete");
    let p2 = s.list("/p/", Some("/p/b"), 2, Some(p1.revision)).await.expect("page 2");
    assert_eq!(
        p2.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/p/c", "/p/d"]
    );
    assert!(!p2.more);
    assert_eq!(p2.revision, p1.revision);
    // At the latest revision, the new state.
    let now = s.list("/p/", None, 0, None).await.expect("list");
    assert_eq!(
        now.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/p/a", "/p/b", "/p/bb", "/p/d"]
    );
}

pub async fn list_at_old_revision_sees_old_values(s: impl Store) {
    let c = s.create("/v/k", b("old")).await.expect("create");
    s.update("/v/k", b("new"), c.mod_revision).await.expect("update");
    let old = s.list("/v/", None, 0, Some(c.mod_revision)).await.expect("list");
    assert_eq!(old.kvs.len(), 1);
    assert_eq!(old.kvs[0].value, b("old"));
    let future = s.current_revision().await.expect("rev") + 10;
    assert!(matches!(
        s.list("/v/", None, 0, Some(future)).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

pub async fn watch_from_revision_replays_then_follows(s: impl Store) {
    let a = s.create("/w/a", b("1")).await.expect("create");
    let a2 = s.update("/w/a", b("2"), a.mod_revision).await.expect("update");
    s.create("/other/x", b("ignored")).await.expect("create");
    let mut w = s.watch("/w/", a.mod_revision).await.expect("watch");
    // History after `a`: the update.
    let e = next_event(&mut w).await;
    assert_eq!(e.kind, EventKind::Put);
    assert_eq!(e.kv.value, b("2"));
    assert_eq!(e.prev.as_ref().map(|p| p.value.clone()), Some(b("1")));
    // Live: a create, and a delete carrying the last value.
    let bkv = s.create("/w/b", b("b1")).await.expect("create");
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.kv.mod_revision),
        (EventKind::Put, "/w/b", bkv.mod_revision)
    );
    assert_eq!(e.prev, None);
    let d = s.delete("/w/a", Some(a2.mod_revision)).await.expect("delete");
    let e = next_event(&mut w).await;
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.kv.key, "/w/a");
    assert_eq!(e.kv.value, b("2"));
    assert_eq!(e.kv.mod_revision, d.mod_revision);
}

pub async fn watch_delivers_every_event_in_order_under_concurrency(s: impl Store) {
    let s = std::sync::Arc::new(s);
    let start = s.current_revision().await.expect("rev");
    let mut w = s.watch("/c/", start).await.expect("watch");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.create(&format!("/c/{t}-{i}"), b("v")).await.expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let mut last = start;
    for _ in 0..200 {
        let e = next_event(&mut w).await;
        assert!(e.kv.mod_revision > last, "events in strictly increasing revision order");
        last = e.kv.mod_revision;
    }
    assert_eq!(last, s.current_revision().await.expect("rev"));
}

pub async fn compaction_forgets_history_but_not_state(s: impl Store) {
    let a = s.create("/z/a", b("1")).await.expect("create");
    let a2 = s.update("/z/a", b("2"), a.mod_revision).await.expect("update");
    let gone = s.create("/z/gone", b("x")).await.expect("create");
    s.delete("/z/gone", Some(gone.mod_revision)).await.expect("delete");
    let keep = s.create("/z/keep", b("k")).await.expect("create");
    s.compact(keep.mod_revision).await.expect("compact");
    assert_eq!(s.compacted_revision().await.expect("compacted"), keep.mod_revision);
    assert!(matches!(
        s.watch("/z/", a.mod_revision).await,
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        s.list("/z/", None, 0, Some(a2.mod_revision)).await,
        Err(StoreError::Compacted { .. })
    ));
    let now = s
        .list("/z/", None, 0, Some(keep.mod_revision))
        .await
        .expect("list at compacted revision");
    let keys: Vec<_> = now.kvs.iter().map(|k| (k.key.as_str(), k.value.clone())).collect();
    assert_eq!(keys, [("/z/a", b("2")), ("/z/keep", b("k"))]);
    // Watching from the compacted revision itself still works.
    let mut w = s.watch("/z/", keep.mod_revision).await.expect("watch");
    s.update("/z/a", b("3"), a2.mod_revision)
        .await
        .expect("update after compaction");
    assert_eq!(next_event(&mut w).await.kv.value, b("3"));
    assert!(matches!(
        s.compact(keep.mod_revision).await,
        Err(StoreError::Compacted { .. })
    ));
}

pub async fn revision_never_goes_back_after_compacting_a_delete(s: impl Store) {
    let a = s.create("/r/a", b("1")).await.expect("create");
    let d = s.delete("/r/a", Some(a.mod_revision)).await.expect("delete");
    s.compact(d.mod_revision).await.expect("compact");
    assert_eq!(s.current_revision().await.expect("rev"), d.mod_revision);
    let l = s
        .list("/r/", None, 0, None)
        .await
        .expect("list at the current revision");
    assert_eq!(l.revision, d.mod_revision);
    assert!(l.kvs.is_empty());
    let mut w = s
        .watch("/r/", d.mod_revision)
        .await
        .expect("watch from the current revision");
    let n = s.create("/r/b", b("2")).await.expect("create");
    assert!(n.mod_revision > d.mod_revision);
    assert_eq!(next_event(&mut w).await.kv.key, "/r/b");
}

/// Expands to one `#[tokio::test]` per conformance case for the store built by `$factory`
/// (an async expression returning a fresh, empty store).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            create_get_update_delete, compare_and_swap_conflicts, revisions_are_global_and_increasing,
            list_prefix_order_and_pages, list_at_old_revision_sees_old_values,
            watch_from_revision_replays_then_follows, watch_delivers_every_event_in_order_under_concurrency,
            compaction_forgets_history_but_not_state, revision_never_goes_back_after_compacting_a_delete);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case($factory.await).await;
            }
        )*
    };
}
