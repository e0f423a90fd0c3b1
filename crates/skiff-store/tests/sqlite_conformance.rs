//! The store conformance suite on the SQLite backend.

use skiff_store::{SqliteOptions, SqliteStore};

async fn fresh() -> SqliteStore {
    // Leak the tempdir for the test's lifetime: the store keeps the files open.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    SqliteStore::open(SqliteOptions::new(dir.join("state.db"))).expect("open sqlite store")
}

skiff_store::store_conformance_tests!(fresh());

#[tokio::test]
async fn acknowledged_writes_survive_reopen() {
    use skiff_store::Store;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let rev = {
        let s = SqliteStore::open(SqliteOptions::new(&path)).expect("open");
        s.create("/d/a", bytes::Bytes::from_static(b"1"))
            .await
            .expect("create")
            .mod_revision
    };
    let s = SqliteStore::open(SqliteOptions::new(&path)).expect("reopen");
    let got = s.get("/d/a").await.expect("get").expect("present after reopen");
    assert_eq!(got.mod_revision, rev);
    assert_eq!(s.current_revision().await.expect("rev"), rev);
}
