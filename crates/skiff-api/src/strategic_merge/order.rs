//! The order of a merged list, as upstream's `normalizeElementOrder` and `mergeSortedSlice`
//! decide it.
//!
//! A merged list is split into the elements the patch names ("patch items") and the rest
//! ("server-only items"). Each part is sorted: patch items by the order the patch gives (the
//! patch list itself, or `$setElementOrder`), server-only items by their order in the live list.
//! Then the two are interleaved: walking both, a server-only item goes first only when the live
//! list already had it before the patch item at hand. So a new patch item lands before any
//! server-only item still waiting, and server-only items keep their place relative to the patch
//! items that were already in the live list.

use serde_json::Value;

/// How the elements of a list are told apart.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Identity {
    /// Objects, by the value of their merge key.
    Key(&'static str),
    /// Primitives (or lists without merge key), by value.
    Value,
}

impl Identity {
    /// The identity of `item`; `None` for an object lacking the key, or a non-object.
    pub(crate) fn of(self, item: &Value) -> Option<&Value> {
        match self {
            Self::Key(key) => item.as_object().and_then(|object| object.get(key)),
            Self::Value => Some(item),
        }
    }

    fn position(self, ids: &[Value], item: &Value) -> Option<usize> {
        let id = self.of(item)?;
        ids.iter().position(|candidate| candidate == id)
    }
}

/// Splits `merged` into the elements whose identity is in `ids` and the others, keeping the
/// order of each part. Elements without identity count as not named.
pub(crate) fn partition(merged: Vec<Value>, ids: &[Value], id: Identity) -> (Vec<Value>, Vec<Value>) {
    merged.into_iter().partition(|item| id.position(ids, item).is_some())
}

/// The final order of a merged list: `patch_items` sorted by `patch_ids`, `server_only` sorted
/// by `server_ids` (the live list), then interleaved.
pub(crate) fn normalize(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_ids: &[Value],
    server_ids: &[Value],
    id: Identity,
) -> Vec<Value> {
    let patch_items = sort_by(patch_items, patch_ids, id);
    let server_only = sort_by(server_only, server_ids, id);
    interleave(server_only, patch_items, server_ids, id)
}

/// A stable sort by position in `ids`; elements not found go last, in their current order.
fn sort_by(mut items: Vec<Value>, ids: &[Value], id: Identity) -> Vec<Value> {
    items.sort_by_cached_key(|item| id.position(ids, item).unwrap_or(usize::MAX));
    items
}

/// Merges two sorted lists, keeping the relative order within each. `left` (server-only items)
/// goes first only when both elements are in `server_ids` and `left`'s comes earlier.
fn interleave(left: Vec<Value>, right: Vec<Value>, server_ids: &[Value], id: Identity) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => matches!(
                (id.position(server_ids, l), id.position(server_ids, r)),
                (Some(li), Some(ri)) if li < ri
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(v: Value) -> Vec<Value> {
        match v {
            Value::Array(items) => items,
            _ => Vec::new(),
        }
    }

    #[test]
    fn new_patch_items_go_before_waiting_server_only_items() {
        let server = values(json!(["a", "b"]));
        let out = normalize(
            values(json!(["c"])),
            server.clone(),
            &values(json!(["c"])),
            &server,
            Identity::Value,
        );
        assert_eq!(out, values(json!(["c", "a", "b"])));
    }

    #[test]
    fn server_only_items_keep_their_place_among_known_items() {
        // live [1, 2, 9, 3, 4], order [2, 1, 4, 3]: 9 stays between 1 and 4.
        let server = values(json!([1, 2, 9, 3, 4]));
        let order = values(json!([2, 1, 4, 3]));
        let (patch_items, server_only) = partition(server.clone(), &order, Identity::Value);
        let out = normalize(patch_items, server_only, &order, &server, Identity::Value);
        assert_eq!(out, values(json!([2, 1, 9, 4, 3])));
    }

    #[test]
    fn objects_are_identified_by_key() {
        let id = Identity::Key("name");
        assert_eq!(id.of(&json!({"name": "a", "x": 1})), Some(&json!("a")));
        assert_eq!(id.of(&json!({"x": 1})), None);
        assert_eq!(id.of(&json!("a")), None);
    }
}
