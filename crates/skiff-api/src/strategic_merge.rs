//! Strategic merge patch (`application/strategic-merge-patch+json`) for the built-in kinds, with
//! the semantics of `k8s.io/apimachinery/pkg/util/strategicpatch` (v0.33) as the API server
//! applies it.
//!
//! A strategic merge patch is a JSON merge patch (objects merge key by key, `null` deletes a key,
//! scalars replace) plus per-field metadata from the Go struct tags of `k8s.io/api`:
//!
//! * a list tagged `patchStrategy:"merge"` with a `patchMergeKey` merges element by element,
//!   matching elements by the key; one tagged `merge` without key (`finalizers`) is a set union;
//!   every other list is replaced wholesale;
//! * a struct tagged `patchStrategy:"replace"` is replaced wholesale.
//!
//! and the directives that kubectl sends:
//!
//! * `"$patch": "replace"` in an object replaces the object; as a list element
//!   (`{"$patch": "replace"}`) it replaces the list with the other elements of the patch list;
//! * `"$patch": "delete"` in an object makes it `{}`; as a list element it removes the elements
//!   with the element's merge key value;
//! * `"$patch": "merge"` is the default and changes nothing (upstream rejects it; see below);
//! * `"$retainKeys": [..]` drops the keys of the live object that the list does not name;
//! * `"$setElementOrder/<field>": [..]` orders the merged list `<field>`;
//! * `"$deleteFromPrimitiveList/<field>": [..]` removes values from the primitive list `<field>`.
//!
//! No directive ever appears in the result. Where upstream keeps the raw patch value (an element
//! appended to a merged list, a replaced object or list), directive keys and `null`s are dropped,
//! which is what the API server's decode into Go types does with them afterwards.
//!
//! Deliberate differences from upstream, all on inputs kubectl never sends: `$patch: merge` is
//! accepted as the documented default instead of failing; a list of lists, a `null` element or a
//! primitive in a keyed list is an error instead of a panic or a silent union; a field the schema
//! does not know merges as untyped JSON instead of failing the lookup.
//!
//! The metadata lives in [`schema`]; [`order`] decides the order of merged lists.

mod order;
mod schema;
#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::{Map, Value};

use order::Identity;
use schema::{Shape, TypeDef};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Patch metadata of one field: how lists/maps under it merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced wholesale by the patch value: an untagged list, or a struct tagged
    /// `patchStrategy:"replace"`.
    Atomic,
    /// Merged: a list element by element, matched by `key` (a set union of primitives when
    /// `key` is `None`); an object key by key.
    Merge { key: Option<&'static str> },
}

/// What the schema table records for one field of a built-in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    pub strategy: ListStrategy,
    /// The field's `patchStrategy` includes `retainKeys`, so kubectl sends `$retainKeys` for it.
    pub retain_keys: bool,
    /// The Go type of the object, or of each list element, when the table describes it.
    pub type_name: Option<&'static str>,
}

/// Why a strategic merge patch could not be applied. Every variant about the patch's content
/// names the field path (`spec.template.spec.containers[0]`; `<root>` for the top level).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategicMergeError {
    #[error("strategic merge patch is not supported for kind {kind:?}")]
    UnsupportedKind { kind: String },
    #[error("the object to patch must be a JSON object, not {found}")]
    OriginalNotObject { found: &'static str },
    #[error("a strategic merge patch must be a JSON object, not {found}")]
    PatchNotObject { found: &'static str },
    #[error("{path}: unknown $patch directive {value}")]
    UnknownDirective { path: String, value: String },
    #[error("{path}: list element does not contain the merge key {key:?}")]
    MissingMergeKey { path: String, key: &'static str },
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{path}: list elements are not all of one type")]
    MixedList { path: String },
    #[error("{path}: lists of lists cannot be merged")]
    NestedList { path: String },
    #[error("{path}: null list elements cannot be merged")]
    NullListElement { path: String },
    #[error("{path}: a merging list of objects needs a merge key")]
    NoMergeKey { path: String },
    #[error("{path}: invalid $retainKeys directive: {reason}")]
    InvalidRetainKeys { path: String, reason: String },
    #[error("{path}: invalid $setElementOrder directive: {reason}")]
    InvalidSetElementOrder { path: String, reason: String },
    #[error("{path}: invalid $deleteFromPrimitiveList directive: {reason}")]
    InvalidDeleteFromPrimitiveList { path: String, reason: String },
}

/// Whether `kind` (a built-in kind name such as `"Deployment"`) has a schema table, so that
/// [`apply`] accepts it. Custom resources do not: the server answers 415 for them.
pub fn supports(kind: &str) -> bool {
    schema::kind_type(kind).is_some()
}

/// The patch metadata of the field at `path` (field names from the object root, list elements
/// implicit: `["spec", "template", "spec", "containers", "env"]`), if the table records it.
/// Fields without patch metadata are not recorded: objects under them merge, lists replace.
pub fn patch_meta(kind: &str, path: &[&str]) -> Option<PatchMeta> {
    let (last, parents) = path.split_last()?;
    let mut ty = schema::kind_type(kind)?;
    for name in parents {
        ty = ty.field(name)?.ty?;
    }
    let field = ty.field(last)?;
    Some(PatchMeta {
        strategy: field.strategy,
        retain_keys: field.retain_keys,
        type_name: field.ty.map(|ty| ty.name),
    })
}

/// Applies the strategic merge patch `patch` to `original`, an object of the built-in `kind`.
///
/// A `null` patch changes nothing and a `null` original counts as `{}`, as upstream; any other
/// non-object is an error.
pub fn apply(original: &Value, patch: &Value, kind: &str) -> Result<Value, StrategicMergeError> {
    let ty = schema::kind_type(kind).ok_or_else(|| StrategicMergeError::UnsupportedKind { kind: kind.to_owned() })?;
    let original = match original {
        Value::Object(object) => object.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(StrategicMergeError::OriginalNotObject {
                found: json_type(other),
            })
        }
    };
    let patch = match patch {
        Value::Object(patch) => patch,
        Value::Null => return Ok(Value::Object(original)),
        other => {
            return Err(StrategicMergeError::PatchNotObject {
                found: json_type(other),
            })
        }
    };
    merge_map(original, patch, Some(ty), &Path::Root).map(Value::Object)
}

/// Merges `patch` into `original` (upstream `mergeMap`).
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    ty: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<Map<String, Value>, StrategicMergeError> {
    if let Some(directive) = patch.get(PATCH) {
        match directive.as_str() {
            Some("replace") => return Ok(verbatim_map(patch)),
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(StrategicMergeError::UnknownDirective {
                    path: path.render(),
                    value: directive.to_string(),
                })
            }
        }
    }

    apply_retain_keys(&mut original, patch, path)?;
    let ordered = apply_set_element_order(&mut original, patch, ty, path)?;

    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) || ordered.contains(&key.as_str()) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            delete_from_primitive_list(&mut original, field, value, path)?;
            continue;
        }
        merge_field(&mut original, key, value, ty, path)?;
    }
    Ok(original)
}

/// Merges the patch value of one key into `original`.
fn merge_field(
    original: &mut Map<String, Value>,
    key: &str,
    value: &Value,
    ty: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<(), StrategicMergeError> {
    if value.is_null() {
        original.shift_remove(key);
        return Ok(());
    }
    let path = path.field(key);
    let field = ty.and_then(|ty| ty.field(key));
    match (original.get_mut(key), value) {
        (Some(Value::Object(current)), Value::Object(patch)) => {
            let field = field.filter(|f| f.shape == Shape::Object);
            if field.is_some_and(|f| f.strategy == ListStrategy::Atomic) {
                *current = verbatim_map(patch);
            } else {
                let merged = merge_map(std::mem::take(current), patch, field.and_then(|f| f.ty), &path)?;
                *current = merged;
            }
        }
        (Some(Value::Array(current)), Value::Array(patch)) => {
            let field = field.filter(|f| f.shape == Shape::List);
            match field.map(|f| f.strategy) {
                Some(ListStrategy::Merge { key }) => {
                    let merged = merge_list(std::mem::take(current), patch, key, field.and_then(|f| f.ty), &path)?;
                    *current = merged;
                }
                Some(ListStrategy::Atomic) | None => {
                    *current = patch.iter().map(verbatim).collect();
                }
            }
        }
        // Missing, or of another JSON type (which includes scalars replacing scalars).
        _ => match take_patch_value(value) {
            Some(value) => {
                original.insert(key.to_owned(), value);
            }
            None => {
                original.shift_remove(key);
            }
        },
    }
    Ok(())
}

/// Merges a list with merge strategy (upstream `mergeSlice`).
fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    key: Option<&'static str>,
    element_ty: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<Vec<Value>, StrategicMergeError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    match (element_kind(&original, patch, path)?, key) {
        (ElementKind::Primitive, None) => Ok(union(original, patch)),
        (ElementKind::Primitive, Some(_)) => Err(StrategicMergeError::WrongType {
            path: path.render(),
            expected: "a list of objects",
            found: "a list of primitives",
        }),
        (ElementKind::Object, None) => Err(StrategicMergeError::NoMergeKey { path: path.render() }),
        (ElementKind::Object, Some(key)) => merge_keyed_list(original, patch, key, element_ty, path),
    }
}

/// The set union of two lists of primitives, deduplicated, in upstream's order.
fn union(original: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    let mut patch_items: Vec<Value> = Vec::with_capacity(patch.len());
    for item in patch {
        if !patch_items.contains(item) {
            patch_items.push(item.clone());
        }
    }
    let mut server_only: Vec<Value> = Vec::with_capacity(original.len());
    for item in &original {
        if !patch_items.contains(item) && !server_only.contains(item) {
            server_only.push(item.clone());
        }
    }
    order::normalize(
        patch_items.clone(),
        server_only,
        &patch_items,
        &original,
        Identity::Value,
    )
}

/// Merges a list of objects by merge key, honouring `$patch` elements.
fn merge_keyed_list(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &'static str,
    element_ty: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<Vec<Value>, StrategicMergeError> {
    let id = Identity::Key(key);

    // The directive elements first (upstream `mergeSliceWithSpecialElements`).
    let mut replace = false;
    let mut elements: Vec<(usize, &Map<String, Value>)> = Vec::with_capacity(patch.len());
    for (index, element) in patch.iter().enumerate() {
        let element_path = path.index(index);
        let Value::Object(element) = element else {
            return Err(wrong_type(&element_path, "an object", element));
        };
        let Some(directive) = element.get(PATCH) else {
            elements.push((index, element));
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = element.get(key).ok_or_else(|| StrategicMergeError::MissingMergeKey {
                    path: element_path.render(),
                    key,
                })?;
                original.retain(|item| id.of(item) != Some(value));
            }
            Some("replace") => replace = true,
            // An explicit default: a plain element if it names one, else nothing.
            Some("merge") => {
                if element.contains_key(key) {
                    elements.push((index, element));
                }
            }
            _ => {
                return Err(StrategicMergeError::UnknownDirective {
                    path: element_path.render(),
                    value: directive.to_string(),
                })
            }
        }
    }
    let mut merged = if replace {
        let replacement = elements
            .iter()
            .map(|(_, element)| Value::Object(verbatim_map(element)))
            .collect();
        elements.clear();
        replacement
    } else {
        original
    };

    let server_ids = identities(&merged, id, path)?;
    let mut patch_ids = Vec::with_capacity(elements.len());
    for (index, element) in elements {
        let element_path = path.index(index);
        let value = element.get(key).ok_or_else(|| StrategicMergeError::MissingMergeKey {
            path: element_path.render(),
            key,
        })?;
        patch_ids.push(value.clone());
        let found = merged.iter_mut().find_map(|item| match item {
            Value::Object(object) if object.get(key) == Some(value) => Some(object),
            _ => None,
        });
        match found {
            Some(object) => {
                let current = std::mem::take(object);
                *object = merge_map(current, element, element_ty, &element_path)?;
            }
            None => merged.push(Value::Object(verbatim_map(element))),
        }
    }

    let (patch_items, server_only) = order::partition(merged, &patch_ids, id);
    Ok(order::normalize(patch_items, server_only, &patch_ids, &server_ids, id))
}

/// Applies `$retainKeys`: checks that the patch only sets listed keys, then drops the keys of
/// `original` that the list does not name.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &Path<'_>,
) -> Result<(), StrategicMergeError> {
    let Some(retain) = patch.get(RETAIN_KEYS) else {
        return Ok(());
    };
    let invalid = |reason: String| StrategicMergeError::InvalidRetainKeys {
        path: path.render(),
        reason,
    };
    let Value::Array(retain) = retain else {
        return Err(invalid(format!("must be a list, not {}", json_type(retain))));
    };
    let retained = |key: &str| retain.iter().any(|k| k.as_str() == Some(key));
    for (key, value) in patch {
        let directive = key == PATCH
            || key == RETAIN_KEYS
            || key.starts_with(SET_ELEMENT_ORDER)
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST);
        if !directive && !value.is_null() && !retained(key) {
            return Err(invalid(format!("the patch sets {key:?}, which it does not list")));
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// Applies every `$setElementOrder/<field>` of `patch` (upstream `mergePatchIntoOriginal`):
/// merges `<field>` and orders the result. Returns the fields it handled.
fn apply_set_element_order<'p>(
    original: &mut Map<String, Value>,
    patch: &'p Map<String, Value>,
    ty: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<Vec<&'p str>, StrategicMergeError> {
    let mut handled = Vec::new();
    for (key, order) in patch {
        let Some(name) = key.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        let path = path.field(name);
        let Value::Array(order) = order else {
            return Err(StrategicMergeError::InvalidSetElementOrder {
                path: path.render(),
                reason: format!("must be a list, not {}", json_type(order)),
            });
        };
        let field = ty.and_then(|ty| ty.field(name)).filter(|f| f.shape == Shape::List);
        let strategy = field.map_or(ListStrategy::Atomic, |f| f.strategy);
        let id = match strategy {
            ListStrategy::Merge { key: Some(key) } => Identity::Key(key),
            _ => Identity::Value,
        };

        let current = match original.get_mut(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(current)) => Some(std::mem::take(current)),
            Some(other) => return Err(wrong_type(&path, "a list", other)),
        };
        let patch_list = match patch.get(name) {
            None => None,
            Some(Value::Array(list)) => Some(list.as_slice()),
            Some(other) => return Err(wrong_type(&path, "a list", other)),
        };
        handled.push(name);

        validate_order(patch_list, order, id, &path)?;
        let order_ids = identities(order, id, &path)?;
        let server_ids = match &current {
            Some(current) => identities(current, id, &path)?,
            None => Vec::new(),
        };
        let merged = match (current, patch_list) {
            (Some(current), None) => current,
            (None, Some(list)) => list.iter().filter_map(take_patch_value).collect(),
            (Some(current), Some(list)) => match strategy {
                ListStrategy::Merge { key } => merge_list(current, list, key, field.and_then(|f| f.ty), &path)?,
                ListStrategy::Atomic => list.iter().map(verbatim).collect(),
            },
            (None, None) => continue,
        };
        identities(&merged, id, &path)?;
        let (patch_items, server_only) = order::partition(merged, &order_ids, id);
        let ordered = order::normalize(patch_items, server_only, &order_ids, &server_ids, id);
        original.insert(name.to_owned(), Value::Array(ordered));
    }
    Ok(handled)
}

/// Checks that the patch list names its elements in the order `$setElementOrder` gives
/// (upstream `validatePatchWithSetOrderList`).
fn validate_order(
    patch_list: Option<&[Value]>,
    order: &[Value],
    id: Identity,
    path: &Path<'_>,
) -> Result<(), StrategicMergeError> {
    let Some(patch_list) = patch_list else {
        return Ok(());
    };
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut named = Vec::with_capacity(patch_list.len());
    for (index, element) in patch_list.iter().enumerate() {
        if let Identity::Key(_) = id {
            if !element.is_object() {
                return Err(wrong_type(&path.index(index), "an object", element));
            }
            if directive_of(element) == Some("delete") {
                continue;
            }
        }
        named.push((index, element));
    }
    let (mut p, mut o) = (0, 0);
    while p < named.len() && o < order.len() {
        let (index, element) = named[p];
        if directive_of(element).is_some() {
            p += 1;
            continue;
        }
        let left = identity(element, id, &path.index(index))?;
        let right = identity(&order[o], id, path)?;
        if left == right {
            p += 1;
        }
        o += 1;
    }
    if p < named.len() {
        return Err(StrategicMergeError::InvalidSetElementOrder {
            path: path.render(),
            reason: "the patch list names elements that it does not list, or lists them in another order".to_owned(),
        });
    }
    Ok(())
}

/// Applies `$deleteFromPrimitiveList/<field>`: removes every listed value from the list.
fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    name: &str,
    values: &Value,
    path: &Path<'_>,
) -> Result<(), StrategicMergeError> {
    let path = path.field(name);
    let invalid = |reason: String| StrategicMergeError::InvalidDeleteFromPrimitiveList {
        path: path.render(),
        reason,
    };
    let values = match values {
        // As upstream: a null deletion list deletes the field.
        Value::Null => {
            original.shift_remove(name);
            return Ok(());
        }
        Value::Array(values) => values,
        other => return Err(invalid(format!("must be a list, not {}", json_type(other)))),
    };
    if let Some(bad) = values.iter().find(|v| !is_primitive(v)) {
        return Err(invalid(format!("lists {}, not a primitive", json_type(bad))));
    }
    if let Some(Value::Array(current)) = original.get_mut(name) {
        if let Some(bad) = current.iter().find(|v| !is_primitive(v)) {
            return Err(invalid(format!("the list holds {}, not primitives", json_type(bad))));
        }
        current.retain(|item| !values.contains(item));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Object,
    Primitive,
}

/// The common kind of the elements of both lists (upstream `sliceElementType`).
fn element_kind(original: &[Value], patch: &[Value], path: &Path<'_>) -> Result<ElementKind, StrategicMergeError> {
    let mut seen: Option<&'static str> = None;
    for item in original.iter().chain(patch) {
        match item {
            Value::Null => return Err(StrategicMergeError::NullListElement { path: path.render() }),
            Value::Array(_) => return Err(StrategicMergeError::NestedList { path: path.render() }),
            _ => {}
        }
        let kind = json_type(item);
        match seen {
            None => seen = Some(kind),
            Some(seen) if seen == kind => {}
            Some(_) => return Err(StrategicMergeError::MixedList { path: path.render() }),
        }
    }
    // All elements share one type now, so the first one tells.
    let first = original.iter().chain(patch).next();
    Ok(if first.is_some_and(Value::is_object) {
        ElementKind::Object
    } else {
        ElementKind::Primitive
    })
}

/// The identities of every element of `list`; for merge-keyed lists each must be an object
/// holding the key.
fn identities(list: &[Value], id: Identity, path: &Path<'_>) -> Result<Vec<Value>, StrategicMergeError> {
    list.iter()
        .enumerate()
        .map(|(index, item)| identity(item, id, &path.index(index)).cloned())
        .collect()
}

fn identity<'v>(item: &'v Value, id: Identity, path: &Path<'_>) -> Result<&'v Value, StrategicMergeError> {
    match (id, item) {
        (Identity::Key(key), Value::Object(object)) => {
            object.get(key).ok_or_else(|| StrategicMergeError::MissingMergeKey {
                path: path.render(),
                key,
            })
        }
        (Identity::Key(_), other) => Err(wrong_type(path, "an object", other)),
        (Identity::Value, item) => Ok(item),
    }
}

fn directive_of(item: &Value) -> Option<&str> {
    item.as_object()
        .and_then(|object| object.get(PATCH))
        .map(|directive| directive.as_str().unwrap_or(""))
}

fn is_directive_key(key: &str) -> bool {
    key == PATCH
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

fn is_primitive(value: &Value) -> bool {
    !matches!(value, Value::Object(_) | Value::Array(_))
}

/// A patch value taken where the live object has nothing to merge it with (upstream
/// `discardNullValuesFromPatch` + `removeDirectives`): `null` keys are dropped, and so is any
/// object that carries `$patch` (a `$patch: delete` element of a new list, say). `None` when the
/// value itself is such an object.
fn take_patch_value(value: &Value) -> Option<Value> {
    match value {
        Value::Object(object) => {
            if object.get(PATCH).is_some_and(|directive| !directive.is_null()) {
                return None;
            }
            let mut out = Map::with_capacity(object.len());
            for (key, value) in object {
                if value.is_null() || is_directive_key(key) {
                    continue;
                }
                if let Some(value) = take_patch_value(value) {
                    out.insert(key.clone(), value);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(take_patch_value).collect())),
        other => Some(other.clone()),
    }
}

/// A patch value that replaces the live one as it is: directive keys and `null` keys dropped.
fn verbatim(value: &Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(verbatim_map(object)),
        Value::Array(items) => Value::Array(items.iter().map(verbatim).collect()),
        other => other.clone(),
    }
}

fn verbatim_map(object: &Map<String, Value>) -> Map<String, Value> {
    object
        .iter()
        .filter(|(key, value)| !value.is_null() && !is_directive_key(key))
        .map(|(key, value)| (key.clone(), verbatim(value)))
        .collect()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(path: &Path<'_>, expected: &'static str, found: &Value) -> StrategicMergeError {
    StrategicMergeError::WrongType {
        path: path.render(),
        expected,
        found: json_type(found),
    }
}

/// Where in the object the merge is, built without allocating and rendered only for errors.
#[derive(Debug, Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn field(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }

    fn render(&self) -> String {
        let rendered = self.to_string();
        if rendered.is_empty() {
            "<root>".to_owned()
        } else {
            rendered
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}
