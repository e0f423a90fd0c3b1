//! The shape of the generated message table (`descriptors.rs`): for every Kubernetes
//! protobuf message, its fields with their number, JSON name, wire type and the Go facts
//! that decide how `encoding/json` would write them.

/// One protobuf message (one Go struct).
#[derive(Debug)]
pub(super) struct Message {
    /// `group.version.Name`, e.g. `apps.v1.Deployment`; for tests and debugging.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) name: &'static str,
    /// Go types with their own JSON encoding; `None` for ordinary structs.
    pub(super) special: Special,
    /// In Go struct order, which is the order `encoding/json` writes them in.
    pub(super) fields: &'static [Field],
}

/// One field of a message.
#[derive(Debug)]
pub(super) struct Field {
    pub(super) tag: u32,
    /// The JSON name from the Go `json:` tag; empty for an inlined embedded struct.
    pub(super) json: &'static str,
    pub(super) ty: Ty,
    /// A combination of [`PTR`], [`OMIT`], [`INLINE`], [`REP`] and [`SKIP`].
    pub(super) flags: u8,
}

/// The protobuf type of a field. Map keys are always strings in the Kubernetes protos.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ty {
    Str,
    I32,
    I64,
    Bool,
    Bytes,
    F64,
    /// A message, by index into `MESSAGES`.
    Msg(u16),
    /// `map<string, string>`
    MapStr,
    /// `map<string, bytes>` (Secret `data`)
    MapBytes,
    /// `map<string, Message>`
    MapMsg(u16),
}

/// Go types whose JSON is not "an object with one key per field".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    None,
    /// `metav1.Time` {1: seconds, 2: nanos}: RFC 3339 in UTC to the second; null when zero.
    Time,
    /// `metav1.MicroTime`: RFC 3339 in UTC with six fractional digits; null when zero.
    MicroTime,
    /// `metav1.Duration` {1: duration ns}: Go's `time.Duration.String()`.
    Duration,
    /// `resource.Quantity` {1: string}: the string.
    Quantity,
    /// `intstr.IntOrString` {1: type, 2: intVal, 3: strVal}: a number or a string.
    IntOrString,
    /// `runtime.RawExtension` {1: raw}: the raw JSON, or a nested protobuf envelope.
    RawExtension,
    /// `metav1.FieldsV1`, apiextensions `JSON` {1: raw}: the raw JSON.
    RawJson,
    /// `JSONSchemaPropsOrBool` {1: allows, 2: schema}: the schema, else the bool.
    SchemaOrBool,
    /// `JSONSchemaPropsOrArray` {1: schema, 2: schemas}: the array if not empty, else the schema.
    SchemaOrArray,
    /// `JSONSchemaPropsOrStringArray` {1: schema, 2: property}: the strings if any, else the schema.
    SchemaOrStringArray,
    /// A message wrapping a Go slice type (`type ExtraValue []string`): the bare array in field 1.
    Items,
}

/// The Go field is a pointer: gogo-protobuf writes it only when it is not nil, so its
/// presence on the wire is meaningful and a zero value (`replicas: 0`) is kept.
pub(super) const PTR: u8 = 1;
/// A non-pointer scalar tagged `omitempty` (or a struct tagged `omitzero`): written by
/// gogo-protobuf even when zero, and dropped from the JSON when zero.
pub(super) const OMIT: u8 = 2;
/// An embedded struct with an empty JSON name: its fields are merged into the parent.
pub(super) const INLINE: u8 = 4;
/// A repeated field.
pub(super) const REP: u8 = 8;
/// `json:"-"`: never written to JSON.
pub(super) const SKIP: u8 = 16;

/// Keeps the generated table short.
pub(super) const fn m(name: &'static str, special: Special, fields: &'static [Field]) -> Message {
    Message { name, special, fields }
}

/// Keeps the generated table short.
pub(super) const fn f(tag: u32, json: &'static str, ty: Ty, flags: u8) -> Field {
    Field { tag, json, ty, flags }
}

impl Field {
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

impl Message {
    pub(super) fn field_index(&self, tag: u32) -> Option<usize> {
        self.fields.iter().position(|field| field.tag == tag)
    }
}
