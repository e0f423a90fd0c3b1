//! The watch cache: one store watch feeds an in-memory copy of every object plus a window of
//! recent events, so lists and any number of watchers cost no store reads (upstream's cacher).
//!
//! Objects are kept both parsed (for selectors, tables, patches) and serialized with their
//! `resourceVersion` set (so lists and watch events are byte copies).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use skiff_store::{EventKind, KeyValue, Revision, Store, StoreError};

/// One object as the cache holds it: serialized (with `resourceVersion` set) plus the few
/// fields selectors and controllers look at. The parsed form is made on demand — keeping
/// every object parsed costs about ten times its JSON size.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub rev: Revision,
    pub bytes: Bytes,
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Value,
    /// Set when the object has a `deletionTimestamp`.
    pub deleting: bool,
    /// Values of the selectable fields the object has (see `INDEXED_FIELDS`).
    fields: Vec<(&'static str, String)>,
}

impl CachedObject {
    /// The object, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// A field selector's view of a field: `""` when unset.
    pub fn field(&self, path: &str) -> &str {
        match path {
            "metadata.name" => &self.name,
            "metadata.namespace" => self.namespace.as_deref().unwrap_or(""),
            _ => self
                .fields
                .iter()
                .find(|(k, _)| *k == path)
                .map(|(_, v)| v.as_str())
                .unwrap_or(""),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
}

impl WatchEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct CacheEvent {
    pub kind: WatchEventType,
    pub rev: Revision,
    /// For a deletion: the last state, with `resourceVersion` set to the deletion's revision.
    pub obj: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
    /// The object as `PartialObjectMetadata`, made by the first metadata-only watcher.
    pub meta_cut: std::sync::OnceLock<Bytes>,
}

struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
    events: VecDeque<Arc<CacheEvent>>,
    rev: Revision,
    /// Watches from revisions before this cannot be served.
    oldest: Revision,
    /// The live feed. Replaced on every re-list, which ends every watch on the old feed: their
    /// clients resume (or re-list on 410), so nothing that happened during the gap is lost.
    tx: broadcast::Sender<Arc<CacheEvent>>,
}

pub struct Cache {
    state: RwLock<State>,
    feed_capacity: usize,
    rev_tx: watch::Sender<Revision>,
    capacity: usize,
}

/// A watch from the cache: events already past the start revision, then the live feed.
pub struct CacheWatch {
    pub backlog: Vec<Arc<CacheEvent>>,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
}

pub fn cached(kv: &KeyValue, rev: Revision) -> Result<Arc<CachedObject>, serde_json::Error> {
    if let Some(c) = raw::cached(kv, rev) {
        return Ok(Arc::new(c));
    }
    cached_by_value(kv, rev)
}

/// [`cached`] through a full parse: the reference the raw path must agree with, and the way for
/// stored bytes the raw path does not take (not compact, escaped keys).
fn cached_by_value(kv: &KeyValue, rev: Revision) -> Result<Arc<CachedObject>, serde_json::Error> {
    let mut obj: Value = serde_json::from_slice(&kv.value)?;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
    let bytes = Bytes::from(serde_json::to_vec(&obj)?);
    let meta = &obj["metadata"];
    let fields = skiff_api::selector::INDEXED_FIELDS
        .iter()
        .filter_map(|f| {
            let mut cur = &obj;
            for seg in f.split('.') {
                cur = cur.get(seg)?;
            }
            let v = match cur {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((*f, v))
        })
        .collect();
    Ok(Arc::new(CachedObject {
        key: kv.key.clone(),
        rev,
        name: meta["name"].as_str().unwrap_or("").to_string(),
        namespace: meta["namespace"].as_str().map(str::to_string),
        labels: meta.get("labels").cloned().unwrap_or(Value::Null),
        deleting: !meta["deletionTimestamp"].is_null(),
        fields,
        bytes,
    }))
}

/// Building a cache entry without parsing the object: the stored JSON (compact, as the API
/// server writes it) is scanned into borrowed raw values, the revision is spliced into
/// `metadata`, and only the metadata and indexed fields are decoded. Every write and every
/// watch resumed from history goes through here; a full parse and re-serialisation of a pod
/// was most of their cost. Hand-written because no crate splices into JSON text.
pub(crate) mod raw {
    use std::borrow::Cow;

    use bytes::Bytes;
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use serde_json::Value;

    use super::CachedObject;
    use skiff_store::{KeyValue, Revision};

    /// An object's members in order, values unparsed.
    struct Entries<'a>(Vec<(&'a str, &'a RawValue)>);

    impl<'de> Deserialize<'de> for Entries<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entries<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries<'de>, A::Error> {
                    let mut out = Vec::new();
                    while let Some(e) = m.next_entry::<&'de str, &'de RawValue>()? {
                        out.push(e);
                    }
                    Ok(Entries(out))
                }
            }
            d.deserialize_map(V)
        }
    }

    impl<'a> Entries<'a> {
        fn parse(text: &'a str) -> Option<Entries<'a>> {
            if !text.starts_with('{') {
                return None;
            }
            serde_json::from_str(text).ok()
        }
        fn get(&self, key: &str) -> Option<&'a RawValue> {
            self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta<'a> {
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
        #[serde(default)]
        namespace: Option<String>,
        #[serde(default)]
        labels: Option<Value>,
        #[serde(borrow, default)]
        deletion_timestamp: Option<&'a RawValue>,
        #[serde(borrow, default)]
        resource_version: Option<&'a RawValue>,
    }

    /// The text of an indexed field as the full path renders it: strings unquoted, other
    /// values as compact JSON, null absent.
    fn field_text(raw: &RawValue) -> Option<String> {
        let t = raw.get();
        if t == "null" {
            None
        } else if t.starts_with('"') {
            serde_json::from_str::<String>(t).ok()
        } else {
            Some(t.to_string())
        }
    }

    /// The stored form of a cached object (`bytes`, with `resourceVersion` `rev` spliced in)
    /// after `edit` changes some of its top-level members. Only the members named in `parts`
    /// are parsed and given to `edit` (absent ones are not in the map; what `edit` removes goes,
    /// what it adds is appended); the others, metadata among them, are copied as text, and the
    /// revision is cut out again. `None` when the text is not as the cache writes it.
    pub fn edit_parts<E>(
        bytes: &[u8],
        rev: Revision,
        parts: &[&str],
        edit: impl FnOnce(&mut serde_json::Map<String, Value>) -> Result<(), E>,
    ) -> Option<Result<Vec<u8>, E>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let top = Entries::parse(text)?;
        let mut map = serde_json::Map::new();
        for (k, v) in &top.0 {
            if parts.contains(k) {
                map.insert((*k).to_string(), serde_json::from_str(v.get()).ok()?);
            }
        }
        if let Err(e) = edit(&mut map) {
            return Some(Err(e));
        }
        let mut out = Vec::with_capacity(bytes.len() + 64);
        out.push(b'{');
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, k).expect("writing to a Vec");
            out.push(b':');
            out.extend_from_slice(v);
        };
        for (k, v) in &top.0 {
            if parts.contains(k) {
                if let Some(val) = map.remove(*k) {
                    member(&mut out, k, &serde_json::to_vec(&val).ok()?);
                }
            } else if *k == "metadata" {
                let m = v.get();
                let rv = format!("\"resourceVersion\":\"{rev}\"}}");
                let cut = if let Some(head) = m.strip_suffix(&format!(",{rv}")) {
                    format!("{head}}}")
                } else if m == format!("{{{rv}") {
                    "{}".to_string()
                } else {
                    return None;
                };
                member(&mut out, k, cut.as_bytes());
            } else {
                member(&mut out, k, v.get().as_bytes());
            }
        }
        for (k, v) in map {
            member(&mut out, &k, &serde_json::to_vec(&v).ok()?);
        }
        out.push(b'}');
        Some(Ok(out))
    }

    pub(super) fn cached(kv: &KeyValue, rev: Revision) -> Option<CachedObject> {
        let text = std::str::from_utf8(&kv.value).ok()?;
        let top = Entries::parse(text)?;
        let meta_raw = top.get("metadata")?;
        let m = meta_raw.get();
        if !(m.starts_with('{') && m.ends_with('}')) {
            return None;
        }
        let meta: Meta = serde_json::from_str(m).ok()?;
        // Stored objects carry no resourceVersion; one that does takes the full path.
        if meta.resource_version.is_some() {
            return None;
        }
        // Where the metadata object closes, as an offset into `text` (it borrows from it).
        let start = m.as_ptr() as usize - text.as_ptr() as usize;
        let close = start + m.len() - 1;
        let rv = format!("\"resourceVersion\":\"{rev}\"");
        let sep = if m[1..m.len() - 1].trim().is_empty() { "" } else { "," };
        let mut bytes = Vec::with_capacity(text.len() + rv.len() + 1);
        bytes.extend_from_slice(&text.as_bytes()[..close]);
        bytes.extend_from_slice(sep.as_bytes());
        bytes.extend_from_slice(rv.as_bytes());
        bytes.extend_from_slice(&text.as_bytes()[close..]);

        let mut nested: Vec<(&str, Option<Entries>)> = Vec::new();
        let mut fields = Vec::new();
        for f in skiff_api::selector::INDEXED_FIELDS {
            let (first, rest) = match f.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (*f, None),
            };
            let Some(outer) = top.get(first) else { continue };
            let raw = match rest {
                None => Some(outer),
                Some(rest) => {
                    if rest.contains('.') {
                        return None;
                    }
                    if !nested.iter().any(|(k, _)| *k == first) {
                        let parsed = if outer.get().starts_with('{') {
                            Some(Entries::parse(outer.get())?)
                        } else {
                            None
                        };
                        nested.push((first, parsed));
                    }
                    let (_, inner) = nested.iter().find(|(k, _)| *k == first)?;
                    inner.as_ref().and_then(|e| e.get(rest))
                }
            };
            if let Some(v) = raw.and_then(field_text) {
                fields.push((*f, v));
            }
        }
        Some(CachedObject {
            key: kv.key.clone(),
            rev,
            name: meta.name.map(Cow::into_owned).unwrap_or_default(),
            namespace: meta.namespace,
            labels: meta.labels.unwrap_or(Value::Null),
            deleting: meta.deletion_timestamp.is_some_and(|d| d.get() != "null"),
            fields,
            bytes: Bytes::from(bytes),
        })
    }
}

impl Cache {
    /// Load everything under `prefix` and follow the store from there, in a background task.
    pub async fn start(store: Arc<dyn Store>, prefix: &str, capacity: usize) -> Result<Arc<Cache>, StoreError> {
        // A watcher may fall this far behind the live feed before it must resume from the
        // window or the store's history. Slots a watcher has read cost nothing; unread ones
        // keep their events alive, so this bounds the memory one slow watcher can hold.
        let feed_capacity = (capacity * 3).max(1024);
        let (tx, _) = broadcast::channel(feed_capacity);
        let (rev_tx, _) = watch::channel(0);
        let cache = Arc::new(Cache {
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                events: VecDeque::new(),
                rev: 0,
                oldest: 0,
                tx,
            }),
            feed_capacity,
            rev_tx,
            capacity,
        });
        let rev = cache.relist(&*store, prefix).await?;
        let c = cache.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move { c.follow(store, prefix, rev).await });
        Ok(cache)
    }

    async fn relist(&self, store: &dyn Store, prefix: &str) -> Result<Revision, StoreError> {
        let list = store.list(prefix, None, 0, None).await?;
        let mut objects = BTreeMap::new();
        for kv in &list.kvs {
            match cached(kv, kv.mod_revision) {
                Ok(o) => {
                    objects.insert(kv.key.clone(), o);
                }
                Err(e) => tracing::error!(key = %kv.key, error = %e, "stored object is not JSON; skipped"),
            }
        }
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.objects = objects;
        st.events.clear();
        st.rev = list.revision;
        st.oldest = list.revision;
        st.tx = broadcast::channel(self.feed_capacity).0;
        drop(st);
        self.rev_tx.send_replace(list.revision);
        Ok(list.revision)
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, prefix: String, mut rev: Revision) {
        loop {
            match store.watch(&prefix, rev).await {
                Ok(mut w) => {
                    while let Some(item) = w.next().await {
                        match item {
                            Ok(ev) => {
                                rev = ev.revision();
                                self.apply(ev);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cache watch ended; re-listing");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cache watch failed; re-listing"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            match self.relist(&*store, &prefix).await {
                Ok(r) => rev = r,
                Err(e) => tracing::error!(error = %e, "cache re-list failed"),
            }
        }
    }

    fn apply(&self, ev: skiff_store::Event) {
        let rev = ev.revision();
        let obj = match cached(&ev.kv, rev) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(key = %ev.kv.key, error = %e, "stored object is not JSON; skipped");
                return;
            }
        };
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let prev = st.objects.get(&ev.kv.key).cloned();
        let kind = match ev.kind {
            EventKind::Delete => {
                st.objects.remove(&ev.kv.key);
                WatchEventType::Deleted
            }
            EventKind::Put => {
                st.objects.insert(ev.kv.key.clone(), obj.clone());
                if prev.is_some() {
                    WatchEventType::Modified
                } else {
                    WatchEventType::Added
                }
            }
        };
        let event = Arc::new(CacheEvent {
            kind,
            rev,
            obj,
            prev,
            meta_cut: std::sync::OnceLock::new(),
        });
        st.events.push_back(event.clone());
        while st.events.len() > self.capacity {
            if let Some(old) = st.events.pop_front() {
                st.oldest = old.rev;
            }
        }
        st.rev = rev;
        // Sent under the lock so a watcher that registers under the lock sees no gap.
        let _ = st.tx.send(event);
        drop(st);
        self.rev_tx.send_replace(rev);
    }

    pub fn revision(&self) -> Revision {
        *self.rev_tx.borrow()
    }

    /// Wait until the cache has seen `rev` (a write this server just made, or a revision a
    /// client asked for). False on timeout.
    pub async fn wait_for(&self, rev: Revision, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .objects
            .get(key)
            .cloned()
    }

    /// Every object under `prefix`, in key order, and the revision of the snapshot.
    pub fn list(&self, prefix: &str) -> (Vec<Arc<CachedObject>>, Revision) {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let items = st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, st.rev)
    }

    /// Watch changes with a revision greater than `after`. `Err(oldest)` when `after` is older
    /// than the window of events the cache keeps.
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<CacheWatch, Revision> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        if after < st.oldest {
            return Err(st.oldest);
        }
        let backlog = st
            .events
            .iter()
            .filter(|e| e.rev > after && e.obj.key.starts_with(prefix))
            .cloned()
            .collect();
        let live = st.tx.subscribe();
        Ok(CacheWatch { backlog, live })
    }

    /// For a watch from a revision older than the window of events the cache keeps: the live
    /// feed and the cache's revision at that point. The events in between come from the store's
    /// history (kept until compaction), read in pages by [`Cache::history_page`]. A watcher that
    /// missed a few revisions (a server restart empties the window) resumes where it was
    /// instead of re-listing everything; one that missed more than `Config::watch_replay_max`
    /// gets 410 and re-lists, as upstream: a long replay costs more than a list.
    pub fn live_from_here(&self) -> (broadcast::Receiver<Arc<CacheEvent>>, Revision) {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        (st.tx.subscribe(), st.rev)
    }

    /// The store's changes under `prefix` in `(after, upto]`, as cache events.
    pub async fn history_page(
        store: &dyn Store,
        prefix: &str,
        after: Revision,
        upto: Revision,
    ) -> Result<Vec<Arc<CacheEvent>>, StoreError> {
        let history = store.history(prefix, after, upto).await?;
        let mut page = Vec::with_capacity(history.len());
        for ev in history {
            let rev = ev.revision();
            let Ok(obj) = cached(&ev.kv, rev) else { continue };
            let prev = ev.prev.as_ref().and_then(|p| cached(p, p.mod_revision).ok());
            let kind = match (ev.kind, &prev) {
                (EventKind::Delete, _) => WatchEventType::Deleted,
                (EventKind::Put, Some(_)) => WatchEventType::Modified,
                (EventKind::Put, None) => WatchEventType::Added,
            };
            page.push(Arc::new(CacheEvent {
                kind,
                rev,
                obj,
                prev,
                meta_cut: std::sync::OnceLock::new(),
            }));
        }
        Ok(page)
    }

    /// A snapshot of everything under `prefix` plus a live feed from exactly that point.
    pub fn list_and_watch(
        &self,
        prefix: &str,
    ) -> (Vec<Arc<CachedObject>>, Revision, broadcast::Receiver<Arc<CacheEvent>>) {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let items = st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, st.rev, st.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(v: &Value) -> KeyValue {
        KeyValue {
            key: "/registry/pods/ns/p".into(),
            value: Bytes::from(serde_json::to_vec(v).expect("json")),
            create_revision: 3,
            mod_revision: 9,
        }
    }

    fn same(a: &CachedObject, b: &CachedObject) {
        assert_eq!(a.bytes, b.bytes, "bytes");
        assert_eq!(a.key, b.key);
        assert_eq!(a.rev, b.rev);
        assert_eq!(a.name, b.name);
        assert_eq!(a.namespace, b.namespace);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.deleting, b.deleting);
        assert_eq!(a.fields, b.fields);
    }

    #[test]
    fn raw_entries_match_the_full_parse() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "a/b": "c\"d"},
                                "deletionTimestamp": "2026-01-01T00:00:00Z",
                                "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
                   "spec": {"nodeName": "n1", "restartPolicy": "Always", "hostNetwork": true, "containers": [{"name": "c"}]},
                   "status": {"phase": "Running", "podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}], "nominatedNodeName": null}}),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e.1", "namespace": "ns"},
                   "involvedObject": {"kind": "Pod", "name": "p\u{e9}\\n", "uid": "u"}, "reason": "Scheduled",
                   "source": {"component": "skiff-scheduler"}, "type": "Normal", "count": 3}),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {}, "spec": {"unschedulable": false}}),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "labels": null, "deletionTimestamp": null},
                   "spec": "odd", "status": {"successful": 2}}),
        ];
        for o in &objects {
            let kv = kv(o);
            let fast = raw::cached(&kv, 41).expect("raw path taken");
            let slow = cached_by_value(&kv, 41).expect("full parse");
            same(&fast, &slow);
        }
    }

    #[test]
    fn editing_parts_keeps_the_rest_as_text() {
        let stored = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}});
        let entry = cached(&kv(&stored), 9).expect("cached");
        let edited = raw::edit_parts(&entry.bytes, 9, &["spec", "status"], |m| {
            m["spec"]["nodeName"] = json!("n1");
            m.remove("status");
            m.insert("extra".into(), json!(1));
            Ok::<_, ()>(())
        })
        .expect("as the cache writes it")
        .expect("edited");
        let v: Value = serde_json::from_slice(&edited).expect("valid JSON");
        let mut want = stored.clone();
        want["spec"]["nodeName"] = json!("n1");
        want.as_object_mut().expect("map").remove("status");
        want["extra"] = json!(1);
        // The revision is cut out again: what is stored never carries one.
        assert_eq!(v, want);
        assert!(raw::cached(&kv(&v), 10).is_some());
        // An empty metadata but for the revision, and an error from the edit.
        let bare = cached(&kv(&json!({"metadata": {}, "spec": {}})), 3).expect("cached");
        let out = raw::edit_parts(&bare.bytes, 3, &["spec"], |_| Ok::<_, ()>(()))
            .expect("ok")
            .expect("ok");
        assert_eq!(
            serde_json::from_slice::<Value>(&out).expect("json"),
            json!({"metadata": {}, "spec": {}})
        );
        assert_eq!(
            raw::edit_parts(&bare.bytes, 3, &["spec"], |_| Err("no")),
            Some(Err("no"))
        );
        // Text the cache did not write (another revision) is refused.
        assert!(raw::edit_parts(&bare.bytes, 4, &["spec"], |_| Ok::<_, ()>(())).is_none());
    }

    #[test]
    fn unusual_stored_bytes_take_the_full_parse() {
        let spaced = KeyValue {
            value: Bytes::from_static(b"{ \"metadata\" : { \"name\": \"p\" } }"),
            ..kv(&json!({}))
        };
        let c = cached(&spaced, 5).expect("cached");
        assert_eq!(c.name, "p");
        let v: Value = serde_json::from_slice(&c.bytes).expect("json");
        assert_eq!(v["metadata"]["resourceVersion"], "5");
        let with_rv = kv(&json!({"metadata": {"name": "p", "resourceVersion": "1"}}));
        assert!(raw::cached(&with_rv, 5).is_none());
        let v: Value = serde_json::from_slice(&cached(&with_rv, 5).expect("cached").bytes).expect("json");
        assert_eq!(v["metadata"]["resourceVersion"], "5");
        let no_meta = kv(&json!({"kind": "X"}));
        assert!(raw::cached(&no_meta, 5).is_none());
        assert!(cached(
            &KeyValue {
                value: Bytes::from_static(b"{not json"),
                ..kv(&json!({}))
            },
            5
        )
        .is_err());
    }
}
