//! WATCH: a chunked stream of `WatchEvent`s from the watch cache, with upstream's
//! resourceVersion semantics (synthetic ADDED events for `""`/`"0"`, exact resume for `N`,
//! `410 Expired` as an ERROR event when `N` is too old), selector transitions, bookmarks,
//! `sendInitialEvents`, Table output and timeouts.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, StatusCode};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use skiff_api::ResourceType;
use skiff_store::Revision;

use crate::cache::{CacheEvent, CachedObject, WatchEventType};
use crate::error::{ApiError, ApiResult};
use crate::handlers::{table, Selectors};
use crate::request::{partial_metadata, wants_metadata, wants_table, Query};
use crate::server::Shared;

struct Watcher {
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    prefix: String,
    sel: Selectors,
    table: bool,
    metadata_only: bool,
    q: Query,
    sent_header: bool,
    convert: bool,
}

impl Watcher {
    fn render(&mut self, ty: &str, obj: &CachedObject) -> Bytes {
        if self.table {
            let shown = if self.convert {
                Arc::new(self.shared.objects.present(&self.rt, &obj.value()))
            } else {
                Arc::new(obj.value())
            };
            let t = table(
                &self.rt,
                &[shown],
                &obj.rev.to_string(),
                None,
                &self.q,
                !self.sent_header,
            );
            self.sent_header = true;
            let mut line = serde_json::to_vec(&json!({"type": ty, "object": t})).unwrap_or_default();
            line.push(b'\n');
            return Bytes::from(line);
        }
        let body: Bytes = if self.metadata_only {
            Bytes::from(partial_metadata(&obj.bytes))
        } else if self.convert {
            Bytes::from(serde_json::to_vec(&self.shared.objects.present(&self.rt, &obj.value())).unwrap_or_default())
        } else {
            obj.bytes.clone()
        };
        frame(ty, &body)
    }

    /// The event this watcher sees for a change, after prefix and selector filtering
    /// (an object that stops matching is DELETED for this watcher; one that starts, ADDED).
    fn translate(&mut self, ev: &CacheEvent) -> Option<Bytes> {
        if !ev.obj.key.starts_with(&self.prefix) {
            return None;
        }
        let now = self.sel.matches_cached(&ev.obj);
        let before = ev.prev.as_ref().is_some_and(|p| self.sel.matches_cached(p));
        let ty = match ev.kind {
            WatchEventType::Deleted => (before || now).then_some("DELETED")?,
            WatchEventType::Added => now.then_some("ADDED")?,
            WatchEventType::Modified => match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => {
                    // Leaving the selection: the watcher last saw the previous state; send that,
                    // stamped with this event's revision (as upstream's cacher does).
                    let prev = ev.prev.as_ref()?;
                    let mut v = prev.value();
                    v["metadata"]["resourceVersion"] = serde_json::json!(ev.rev.to_string());
                    let kv = skiff_store::KeyValue {
                        key: prev.key.clone(),
                        value: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                        create_revision: 0,
                        mod_revision: ev.rev,
                    };
                    let stamped = crate::cache::cached(&kv, ev.rev).ok()?;
                    return Some(self.render("DELETED", &stamped));
                }
                (false, false) => return None,
            },
        };
        if self.metadata_only && !self.table {
            // Cut once per event, however many metadata-only watchers see it.
            let cut = ev.meta_cut.get_or_init(|| Bytes::from(partial_metadata(&ev.obj.bytes)));
            return Some(frame(ty, cut));
        }
        Some(self.render(ty, &ev.obj))
    }

    fn bookmark(&self, rev: Revision, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta});
        let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

/// One line of a watch stream: `{"type":…,"object":…}`.
fn frame(ty: &str, body: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(body.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(ty.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(body);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

fn error_event(e: &ApiError) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn stream_response(rx: mpsc::Receiver<Bytes>, table: bool) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let ct = if table {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "no-cache, private")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Where a watch starts: initial objects, a backlog of events, the live feed, the revision,
/// and a range of revisions to read from the store's history first (a watch from before the
/// cache's window).
type Start = (
    Vec<Arc<CachedObject>>,
    Vec<Arc<CacheEvent>>,
    broadcast::Receiver<Arc<CacheEvent>>,
    Revision,
    Option<(Revision, Revision)>,
);

/// Revisions read from the store's history per page, so a long gap costs bounded memory.
const HISTORY_PAGE: Revision = 2_000;

pub async fn watch(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    ns: Option<String>,
    q: &Query,
    accept: &str,
) -> ApiResult<Response> {
    let sel = Selectors::parse(&rt, q)?;
    let rv = q.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_num: Option<Revision> = match rv {
        Some(s) => Some(s.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{s}\": must be a non-negative integer"
            ))
        })?),
        None => None,
    };
    let send_initial = match q.get("sendInitialEvents") {
        Some("true") => {
            if q.get("resourceVersionMatch") != Some("NotOlderThan") {
                return Err(ApiError::bad_request("sendInitialEvents: Forbidden: sendInitialEvents is allowed only with resourceVersionMatch set to NotOlderThan"));
            }
            if !q.flag("allowWatchBookmarks") {
                return Err(ApiError::bad_request("allowWatchBookmarks: Forbidden: allowWatchBookmarks must be set to true when sendInitialEvents is set"));
            }
            true
        }
        Some("false") | None => rv_num.is_none_or(|r| r == 0) && q.get("sendInitialEvents").is_none(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "sendInitialEvents: Invalid value: \"{other}\""
            )))
        }
    };
    let explicit_initial = q.get("sendInitialEvents") == Some("true");
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout = match q.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => {
            use rand::Rng;
            Duration::from_secs(1800 + rand::rng().random_range(0..1800))
        }
    };
    let prefix = rt.prefix(ns.as_deref());
    let cache = shared.objects.cache.clone();
    if let Some(r) = rv_num.filter(|r| *r > 0) {
        if r > cache.revision() && !cache.wait_for(r, Duration::from_secs(3)).await {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {r}, current: {}",
                cache.revision()
            )));
        }
    }
    let table_mode = wants_table(accept);
    let convert = skiff_api::builtin::storage_api_version(&rt.group, &rt.kind).is_some_and(|s| s != rt.api_version());
    let mut w = Watcher {
        shared: shared.clone(),
        rt: rt.clone(),
        prefix: prefix.clone(),
        sel,
        table: table_mode,
        metadata_only: wants_metadata(accept),
        q: q.clone(),
        sent_header: false,
        convert,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);

    // Decide the starting point under the cache's lock: initial state + live feed, or the
    // backlog after `rv` + live feed.
    let (initial, backlog, live, start_rev, from_store): Start = if send_initial {
        let (items, rev, live) = cache.list_and_watch(&prefix);
        (items, Vec::new(), live, rev, None)
    } else {
        let after = match rv_num {
            Some(r) if r > 0 => r,
            _ => cache.revision(),
        };
        match cache.watch(&prefix, after) {
            Ok(cw) => (Vec::new(), cw.backlog, cw.live, after, None),
            Err(oldest)
                if cache.revision().saturating_sub(after) as u64 <= shared.watch_replay_max
                    && shared
                        .objects
                        .store
                        .compacted_revision()
                        .await
                        .is_ok_and(|c| after >= c) =>
            {
                // Older than the window but still in the store's history: page through it.
                let (live, upto) = cache.live_from_here();
                (Vec::new(), Vec::new(), live, after, Some((oldest, upto)))
            }
            Err(oldest) => {
                let e = ApiError::gone(format!("too old resource version: {after} ({oldest})"));
                let _ = tx.try_send(error_event(&e));
                drop(tx);
                return Ok(stream_response(rx, table_mode));
            }
        }
    };
    let mut shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        let mut last_rev = start_rev;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for o in initial.iter() {
            if !w.sel.matches_cached(o) {
                continue;
            }
            let b = w.render("ADDED", o);
            if tx.send(b).await.is_err() {
                return;
            }
        }
        if explicit_initial && bookmarks && tx.send(w.bookmark(start_rev, true)).await.is_err() {
            return;
        }
        if let Some((_, upto)) = from_store {
            tracing::debug!(prefix = %w.prefix, label_selector = w.q.get("labelSelector").unwrap_or(""), field_selector = w.q.get("fieldSelector").unwrap_or(""), metadata_only = w.metadata_only, from = last_rev, to = upto, "watch reads the store's history");
            let store = w.shared.objects.store.clone();
            while last_rev < upto {
                let to = (last_rev + HISTORY_PAGE).min(upto);
                let page = match crate::cache::Cache::history_page(&*store, &w.prefix, last_rev, to).await {
                    Ok(p) => p,
                    Err(e) => {
                        let gone = ApiError::gone(format!("too old resource version: {last_rev} ({e})"));
                        let _ = tx.send(error_event(&gone)).await;
                        return;
                    }
                };
                for ev in &page {
                    if let Some(b) = w.translate(ev) {
                        if tx.send(b).await.is_err() {
                            return;
                        }
                    }
                }
                last_rev = to;
            }
        }
        for ev in &backlog {
            last_rev = ev.rev;
            if let Some(b) = w.translate(ev) {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
        }
        let mut live = live;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(w.bookmark(last_rev, false)).await.is_err() {
                        return;
                    }
                }
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if ev.rev <= last_rev {
                            continue;
                        }
                        last_rev = ev.rev;
                        if let Some(b) = w.translate(&ev) {
                            if tx.send(b).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Too slow a reader: end the watch; the client resumes from its last revision.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(prefix = %w.prefix, label_selector = w.q.get("labelSelector").unwrap_or(""), field_selector = w.q.get("fieldSelector").unwrap_or(""), metadata_only = w.metadata_only, last_rev, missed = n, "watcher fell behind the live feed; ending its watch");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    Ok(stream_response(rx, table_mode))
}
