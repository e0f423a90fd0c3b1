//! LIST and DELETE-collection: from the watch cache for the latest state, from the store at a
//! revision for `limit`/`continue` pages and `resourceVersionMatch=Exact`.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{BufMut, BytesMut};
use http::{header, StatusCode};
use serde_json::{json, Value};

use skiff_api::ResourceType;
use skiff_store::Revision;

use crate::cache::cached;
use crate::error::{ApiError, ApiResult};
use crate::handlers::{json_response, table_response, Selectors};
use crate::objects::DeleteOpts;
use crate::request::{partial_metadata, wants_metadata, wants_table, Query};
use crate::server::Shared;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, last_key: &str) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: last_key.to_string(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> ApiResult<ContinueToken> {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|_| ApiError::bad_request("continue key is not valid: illegal base64 data"))?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    })?;
    if t.v != "meta.k8s.io/v1" {
        return Err(ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    Ok(t)
}

/// One listed object, as the cache or store gave it.
type Item = Arc<crate::cache::CachedObject>;

pub async fn list(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    accept: &str,
) -> ApiResult<Response> {
    let sel = Selectors::parse(rt, q)?;
    let limit = q.int("limit")?.unwrap_or(0).max(0) as usize;
    let rv = q.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = q.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let prefix = rt.prefix(ns);
    if rv_match.is_some() && rv.is_none() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    let rv_num = match rv {
        Some(s) => Some(s.parse::<Revision>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{s}\": must be a non-negative integer"
            ))
        })?),
        None => None,
    };
    if let Some(m) = rv_match {
        if !matches!(m, "Exact" | "NotOlderThan") {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
    }
    let mut next: Option<String> = None;
    let mut remaining: Option<usize> = None;
    let (items, list_rv): (Vec<Item>, Revision) = if let Some(c) = q.get("continue").filter(|s| !s.is_empty()) {
        let token = decode_continue(c)?;
        let (items, more, last) = store_page(shared, &prefix, Some(&token.start), limit, Some(token.rv), &sel).await.map_err(|e| {
            if e.code == 410 {
                ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
            } else {
                e
            }
        })?;
        if more {
            next = last.map(|k| encode_continue(token.rv, &k));
        }
        (items, token.rv)
    } else if rv_match == Some("Exact") || (limit > 0 && rv_num.is_none_or(|r| r != 0)) {
        // A consistent read (or exact revision) from the store, paged.
        let at = if rv_match == Some("Exact") { rv_num } else { None };
        let store_rev = match at {
            Some(r) => r,
            None => shared.objects.store.current_revision().await?,
        };
        if let (Some(r), None) = (rv_num, at) {
            if r > store_rev {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {r}, current: {store_rev}"
                )));
            }
        }
        let (items, more, last) = store_page(shared, &prefix, None, limit, Some(store_rev), &sel).await?;
        if more {
            next = last.map(|k| encode_continue(store_rev, &k));
            remaining = None;
        }
        (items, store_rev)
    } else {
        if let Some(r) = rv_num.filter(|r| *r > 0) {
            if !shared.objects.cache.wait_for(r, Duration::from_secs(3)).await {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {r}, current: {}",
                    shared.objects.cache.revision()
                )));
            }
        }
        let (objs, rev) = shared.objects.cache.list(&prefix);
        let items = objs.into_iter().filter(|o| sel.matches_cached(o)).collect();
        (items, rev)
    };
    let _ = remaining;
    let converted = needs_conversion(rt);
    if wants_table(accept) {
        let objs: Vec<Arc<Value>> = items
            .iter()
            .map(|i| {
                if converted {
                    Arc::new(shared.objects.present(rt, &i.value()))
                } else {
                    Arc::new(i.value())
                }
            })
            .collect();
        return Ok(table_response(rt, &objs, &list_rv.to_string(), next.as_deref(), q));
    }
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(n) = &next {
        meta["continue"] = json!(n);
    }
    let metadata_only = wants_metadata(accept);
    let head = if metadata_only {
        format!("{{\"kind\":\"PartialObjectMetadataList\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":{meta},\"items\":[")
    } else {
        format!(
            "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            rt.list_kind,
            rt.api_version(),
            meta
        )
    };
    let mut out = BytesMut::with_capacity(head.len() + items.iter().map(|i| i.bytes.len() + 1).sum::<usize>() + 2);
    out.put_slice(head.as_bytes());
    for (idx, it) in items.iter().enumerate() {
        if idx > 0 {
            out.put_u8(b',');
        }
        if metadata_only {
            out.put_slice(&partial_metadata(&it.bytes));
        } else if converted {
            out.put_slice(&serde_json::to_vec(&shared.objects.present(rt, &it.value())).unwrap_or_default());
        } else {
            out.put_slice(&it.bytes);
        }
    }
    out.put_slice(b"]}");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out.freeze(),
    )
        .into_response())
}

fn needs_conversion(rt: &ResourceType) -> bool {
    skiff_api::builtin::storage_api_version(&rt.group, &rt.kind).is_some_and(|s| s != rt.api_version())
}

/// Read up to `limit` matching objects from the store at `rev`, after `start`. Returns the
/// items, whether more may match, and the last key read (for the continue token).
async fn store_page(
    shared: &Arc<Shared>,
    prefix: &str,
    start: Option<&str>,
    limit: usize,
    rev: Option<Revision>,
    sel: &Selectors,
) -> ApiResult<(Vec<Item>, bool, Option<String>)> {
    let mut items = Vec::new();
    let mut cursor = start.map(str::to_string);
    loop {
        let page_size = if limit == 0 { 0 } else { (limit - items.len()).max(1) };
        let page = shared
            .objects
            .store
            .list(prefix, cursor.as_deref(), page_size, rev)
            .await?;
        let n = page.kvs.len();
        for kv in &page.kvs {
            cursor = Some(kv.key.clone());
            let c = cached(kv, kv.mod_revision).map_err(|e| ApiError::internal(e.to_string()))?;
            if sel.matches_cached(&c) {
                items.push(c);
                if limit > 0 && items.len() >= limit {
                    // Stopped early: more may follow unless this was the last key of the page
                    // and the store said there is nothing after it.
                    let last = kv.key == page.kvs[n - 1].key;
                    let more = page.more || !last;
                    return Ok((items, more, cursor));
                }
            }
        }
        if !page.more || n == 0 || limit == 0 {
            return Ok((items, false, cursor));
        }
    }
}

pub async fn delete_collection(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    opts: &DeleteOpts,
) -> ApiResult<Response> {
    let sel = Selectors::parse(rt, q)?;
    let (objs, _) = shared.objects.cache.list(&rt.prefix(ns));
    let mut deleted = Vec::new();
    for o in objs.iter().filter(|o| sel.matches_cached(o)) {
        let name = o.name.clone();
        let ons = o.namespace.clone();
        match shared.objects.delete(rt, ons.as_deref(), &name, opts).await {
            Ok((v, _)) => deleted.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": shared.objects.cache.revision().to_string()}, "items": deleted}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/registry/pods/default/a");
        let d = decode_continue(&t).expect("decodes");
        assert_eq!((d.rv, d.start.as_str()), (42, "/registry/pods/default/a"));
        assert_eq!(decode_continue("%%%").expect_err("garbage").code, 400);
        assert_eq!(
            decode_continue(&base64::engine::general_purpose::URL_SAFE.encode(b"{}"))
                .expect_err("no fields")
                .code,
            400
        );
    }
}
