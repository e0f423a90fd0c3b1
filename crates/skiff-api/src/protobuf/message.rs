//! Decodes one message into the JSON that Go's `encoding/json` would write for the same
//! Go value, driven by the descriptor table.
//!
//! # The empty-value rule
//!
//! gogo-protobuf (which generated the Kubernetes `Marshal` methods) writes every
//! non-pointer field, even when it is `""`, `0`, `false` or an empty struct
//! (`kubectl create namespace` sends `status{phase:""}`), and writes a pointer field only
//! when it is not nil (`if m.Replicas != nil {…}` in `generated.pb.go`). The .proto files
//! cannot tell the two apart: they are proto2 and every field in them is `optional`, so
//! prost marks every scalar in k8s-pb `optional` alike. The generator therefore reads the
//! Go types, and each field here is written exactly as `encoding/json` writes the Go field
//! after gogo-protobuf decoded it:
//!
//! * pointer (`*int32`, `*string`, `*Struct`; flag `PTR`): written when it was on the wire,
//!   whatever its value (`replicas: 0`, `storageClassName: ""`, `emptyDir: {}`);
//! * non-pointer scalar tagged `omitempty` (`OMIT`): written unless zero;
//! * non-pointer scalar without `omitempty`: always written, zero if it was not on the wire
//!   (`containers[].name`);
//! * slice or map: written unless empty (Go writes `null` or nothing for a nil one, and
//!   gogo never produces an empty non-nil one);
//! * non-pointer struct: always written, because `omitempty` has no effect on structs in
//!   Go (`spec: {}`, `status: {}`, `resources: {}`); only `omitzero`
//!   (`metadata.creationTimestamp`) drops it when zero;
//! * a value whose Go `MarshalJSON` says `null` (a zero `Time`, i.e. an empty message or
//!   Go's zero instant, an empty `RawExtension`) is left out rather than written as `null`.
//!
//! So a protobuf body decodes to the JSON body the same kubectl command sent before 1.32,
//! minus its `null`s: `create namespace foo` gives
//! `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"foo"},"spec":{},"status":{}}`.
//!
//! Unknown field numbers are skipped (a newer client may send newer fields). A non-repeated
//! field that occurs twice keeps the last occurrence, sub-messages included (protobuf would
//! merge them; gogo never writes a field twice).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::descriptors::MESSAGES;
use super::schema::{Field, Message, Special, Ty, INLINE, OMIT, PTR, REP, SKIP};
use super::wire::{Reader, WireValue};
use super::{well_known, Failure, Seg, WireProblem};

/// Messages nested deeper than this are refused, so hostile input cannot exhaust the
/// stack (JSONSchemaProps and RawExtension make the types recursive).
pub(super) const MAX_DEPTH: usize = 100;

/// A field value after reading it off the wire, before it becomes JSON.
enum Decoded<'a> {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(Value),
    Bytes(&'a [u8]),
    Json(Value),
}

/// What a message's fields held on the wire.
enum Slot<'a> {
    Absent,
    One(Decoded<'a>),
    Many(Vec<Decoded<'a>>),
    Map(Map<String, Value>),
}

/// Decodes the message at `index` in the table from `bytes`.
pub(super) fn decode(index: u16, bytes: &[u8], depth: usize) -> Result<Value, Failure> {
    if depth > MAX_DEPTH {
        return Err(Failure::wire(WireProblem::TooDeep(MAX_DEPTH)));
    }
    let message = &MESSAGES[usize::from(index)];
    let slots = read_fields(message, bytes, depth)?;
    render(message, slots, depth)
}

fn read_fields<'a>(message: &'static Message, bytes: &'a [u8], depth: usize) -> Result<Vec<Slot<'a>>, Failure> {
    let mut slots: Vec<Slot<'a>> = message.fields.iter().map(|_| Slot::Absent).collect();
    let mut reader = Reader::new(bytes);
    while let Some(next) = reader.next_field() {
        let (tag, value) = next.map_err(Failure::wire)?;
        let Some(i) = message.field_index(tag) else {
            continue; // unknown field: skip, like gogo-protobuf
        };
        let field = &message.fields[i];
        read_field(field, &mut slots[i], value, depth).map_err(|failure| failure.within(Seg::Field(field.json)))?;
    }
    Ok(slots)
}

fn read_field<'a>(
    field: &'static Field,
    slot: &mut Slot<'a>,
    value: WireValue<'a>,
    depth: usize,
) -> Result<(), Failure> {
    match field.ty {
        Ty::MapStr | Ty::MapBytes | Ty::MapMsg(_) => {
            let WireValue::Bytes(entry) = value else {
                return Err(wrong_wire_type(field, value, 2));
            };
            if !matches!(slot, Slot::Map(_)) {
                *slot = Slot::Map(Map::new());
            }
            if let Slot::Map(map) = slot {
                let (key, value) = map_entry(field, entry, depth)?;
                map.insert(key, value);
            }
            Ok(())
        }
        _ if field.has(REP) => {
            if !matches!(slot, Slot::Many(_)) {
                *slot = Slot::Many(Vec::new());
            }
            let Slot::Many(items) = slot else {
                return Ok(());
            };
            let mut push = |value: WireValue<'a>| -> Result<(), Failure> {
                let index = items.len();
                let decoded = scalar(field, value, depth).map_err(|failure| failure.within(Seg::Index(index)))?;
                items.push(decoded);
                Ok(())
            };
            match (field.ty, value) {
                // Packed repeated numbers: one length-delimited run of values.
                (Ty::F64, WireValue::Bytes(packed)) => {
                    let chunks = packed.chunks_exact(8);
                    if !chunks.remainder().is_empty() {
                        return Err(Failure::wire(WireProblem::Truncated {
                            field: field.tag,
                            needed: 8,
                            left: chunks.remainder().len(),
                        }));
                    }
                    for chunk in chunks {
                        let mut bits = [0u8; 8];
                        bits.copy_from_slice(chunk);
                        push(WireValue::Fixed64(u64::from_le_bytes(bits)))?;
                    }
                }
                (Ty::I32 | Ty::I64 | Ty::Bool, WireValue::Bytes(packed)) => {
                    let mut reader = Reader::new(packed);
                    while !reader.is_empty() {
                        push(WireValue::Varint(reader.varint().map_err(Failure::wire)?))?;
                    }
                }
                _ => push(value)?,
            }
            Ok(())
        }
        _ => {
            *slot = Slot::One(scalar(field, value, depth)?);
            Ok(())
        }
    }
}

/// A map entry message: {1: key, 2: value}; either may be missing and is then zero.
fn map_entry(field: &'static Field, entry: &[u8], depth: usize) -> Result<(String, Value), Failure> {
    let mut key = String::new();
    let mut value: Option<WireValue<'_>> = None;
    let mut reader = Reader::new(entry);
    while let Some(next) = reader.next_field() {
        match next.map_err(Failure::wire)? {
            (1, WireValue::Bytes(k)) => key = String::from_utf8_lossy(k).into_owned(),
            (1, other) => return Err(wrong_wire_type(field, other, 2)),
            (2, v) => value = Some(v),
            _ => {}
        }
    }
    let at_key = |failure: Failure| failure.within(Seg::Key(key.clone()));
    let bytes: &[u8] = match value {
        None => &[],
        Some(WireValue::Bytes(bytes)) => bytes,
        Some(other) => return Err(at_key(wrong_wire_type(field, other, 2))),
    };
    let value = match field.ty {
        Ty::MapMsg(index) => decode(index, bytes, depth + 1).map_err(at_key)?,
        Ty::MapBytes => Value::String(base64(bytes)),
        _ => Value::String(String::from_utf8_lossy(bytes).into_owned()),
    };
    Ok((key, value))
}

fn scalar<'a>(field: &'static Field, value: WireValue<'a>, depth: usize) -> Result<Decoded<'a>, Failure> {
    let decoded = match (field.ty, value) {
        (Ty::Str, WireValue::Bytes(b)) => {
            // Go strings may hold any bytes; encoding/json writes invalid UTF-8 as U+FFFD.
            Decoded::Str(String::from_utf8_lossy(b).into_owned())
        }
        (Ty::Bytes, WireValue::Bytes(b)) => Decoded::Bytes(b),
        // int32 is sign-extended to a 64-bit varint on the wire; Go truncates it back.
        (Ty::I32, WireValue::Varint(v)) => Decoded::Int(i64::from(v as i32)),
        (Ty::I64, WireValue::Varint(v)) => Decoded::Int(v as i64),
        (Ty::Bool, WireValue::Varint(v)) => Decoded::Bool(v != 0),
        (Ty::F64, WireValue::Fixed64(bits)) => {
            Decoded::Double(well_known::double(f64::from_bits(bits)).map_err(Failure::wire)?)
        }
        (Ty::Msg(index), WireValue::Bytes(b)) => Decoded::Json(decode(index, b, depth + 1)?),
        (Ty::Str | Ty::Bytes | Ty::Msg(_), other) => return Err(wrong_wire_type(field, other, 2)),
        (Ty::I32 | Ty::I64 | Ty::Bool, other) => return Err(wrong_wire_type(field, other, 0)),
        (Ty::F64, other) => return Err(wrong_wire_type(field, other, 1)),
        (Ty::MapStr | Ty::MapBytes | Ty::MapMsg(_), other) => return Err(wrong_wire_type(field, other, 2)),
    };
    Ok(decoded)
}

fn wrong_wire_type(field: &Field, got: WireValue<'_>, expected: u8) -> Failure {
    Failure::wire(WireProblem::WrongWireType {
        field: field.tag,
        got: got.wire_type(),
        expected,
    })
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Decoded<'_> {
    fn into_json(self) -> Value {
        match self {
            Decoded::Str(s) => Value::String(s),
            Decoded::Int(i) => Value::from(i),
            Decoded::Bool(b) => Value::Bool(b),
            Decoded::Double(v) | Decoded::Json(v) => v,
            Decoded::Bytes(b) => Value::String(base64(b)),
        }
    }

    fn is_zero(&self) -> bool {
        match self {
            Decoded::Str(s) => s.is_empty(),
            Decoded::Int(i) => *i == 0,
            Decoded::Bool(b) => !b,
            Decoded::Double(v) => v.as_f64() == Some(0.0),
            Decoded::Bytes(b) => b.is_empty(),
            Decoded::Json(v) => is_empty_json(v),
        }
    }
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The JSON Go writes for a scalar field that was not on the wire.
fn zero(ty: Ty) -> Option<Value> {
    match ty {
        Ty::Str => Some(Value::String(String::new())),
        Ty::I32 | Ty::I64 | Ty::F64 => Some(Value::from(0)),
        Ty::Bool => Some(Value::Bool(false)),
        // A nil []byte is written as null.
        Ty::Bytes | Ty::Msg(_) | Ty::MapStr | Ty::MapBytes | Ty::MapMsg(_) => None,
    }
}

fn render(message: &'static Message, slots: Vec<Slot<'_>>, depth: usize) -> Result<Value, Failure> {
    if message.special != Special::None {
        return special(message, slots, depth);
    }
    let mut object = Map::new();
    for (field, slot) in message.fields.iter().zip(slots) {
        if field.has(SKIP) {
            continue;
        }
        let value = match slot {
            Slot::Many(items) if !items.is_empty() => Value::Array(items.into_iter().map(Decoded::into_json).collect()),
            Slot::Map(map) if !map.is_empty() => Value::Object(map),
            Slot::Many(_) | Slot::Map(_) => continue,
            Slot::Absent if field.has(REP) => continue,
            Slot::Absent => match field.ty {
                Ty::MapStr | Ty::MapBytes | Ty::MapMsg(_) => continue,
                _ if field.has(PTR) => continue,
                // A non-pointer struct is written even when absent: render its zero value.
                Ty::Msg(index) => {
                    decode(index, &[], depth + 1).map_err(|failure| failure.within(Seg::Field(field.json)))?
                }
                ty => match zero(ty) {
                    Some(zero) if !field.has(OMIT) => zero,
                    _ => continue,
                },
            },
            Slot::One(decoded) => {
                if field.has(OMIT) && decoded.is_zero() {
                    continue;
                }
                decoded.into_json()
            }
        };
        if value.is_null() {
            continue;
        }
        if field.has(INLINE) {
            if let Value::Object(inner) = value {
                for (key, value) in inner {
                    object.entry(key).or_insert(value);
                }
            }
            continue;
        }
        object.insert(field.json.to_string(), value);
    }
    Ok(Value::Object(object))
}

/// Takes the slot of the field with number `tag` out of `slots`.
fn take<'a>(message: &Message, slots: &mut [Slot<'a>], tag: u32) -> Slot<'a> {
    match message.field_index(tag) {
        Some(i) => std::mem::replace(&mut slots[i], Slot::Absent),
        None => Slot::Absent,
    }
}

fn one<'a>(message: &Message, slots: &mut [Slot<'a>], tag: u32) -> Option<Decoded<'a>> {
    match take(message, slots, tag) {
        Slot::One(decoded) => Some(decoded),
        _ => None,
    }
}

fn int(decoded: Option<Decoded<'_>>) -> i64 {
    match decoded {
        Some(Decoded::Int(i)) => i,
        _ => 0,
    }
}

fn many_json(slot: Slot<'_>) -> Option<Value> {
    match slot {
        Slot::Many(items) if !items.is_empty() => {
            Some(Value::Array(items.into_iter().map(Decoded::into_json).collect()))
        }
        _ => None,
    }
}

fn special(message: &'static Message, mut slots: Vec<Slot<'_>>, depth: usize) -> Result<Value, Failure> {
    let slots = slots.as_mut_slice();
    let value = match message.special {
        Special::None => Value::Null,
        Special::Time | Special::MicroTime => {
            let seconds = one(message, slots, 1);
            let nanos = one(message, slots, 2);
            if seconds.is_none() && nanos.is_none() {
                // Go decodes an empty Time message to the zero Time, written as null.
                return Ok(Value::Null);
            }
            let seconds = int(seconds);
            let text = if message.special == Special::Time {
                well_known::time(seconds)
            } else {
                well_known::micro_time(seconds, int(nanos))
            };
            text.map_err(Failure::wire)?.map_or(Value::Null, Value::String)
        }
        Special::Duration => Value::String(well_known::duration(int(one(message, slots, 1)))),
        Special::Quantity => match one(message, slots, 1) {
            Some(Decoded::Str(s)) if !s.is_empty() => Value::String(s),
            _ => Value::String("0".to_string()),
        },
        Special::IntOrString => match int(one(message, slots, 1)) {
            0 => Value::from(int(one(message, slots, 2))),
            1 => match one(message, slots, 3) {
                Some(Decoded::Str(s)) => Value::String(s),
                _ => Value::String(String::new()),
            },
            other => return Err(Failure::wire(WireProblem::BadIntOrString(other))),
        },
        Special::RawJson | Special::RawExtension => match one(message, slots, 1) {
            Some(Decoded::Bytes(raw)) if !raw.is_empty() => {
                if message.special == Special::RawExtension && raw.starts_with(&super::MAGIC) {
                    super::decode_envelope(raw, depth + 1).map_err(Failure::embedded)?
                } else {
                    serde_json::from_slice(raw)
                        .map_err(|error| Failure::wire(WireProblem::InvalidJson(error.to_string())))?
                }
            }
            _ => Value::Null,
        },
        Special::SchemaOrBool => match one(message, slots, 2) {
            Some(schema) => schema.into_json(),
            None => Value::Bool(matches!(one(message, slots, 1), Some(Decoded::Bool(true)))),
        },
        Special::SchemaOrArray | Special::SchemaOrStringArray => match many_json(take(message, slots, 2)) {
            Some(array) => array,
            None => one(message, slots, 1).map_or(Value::Null, Decoded::into_json),
        },
        Special::Items => many_json(take(message, slots, 1)).unwrap_or(Value::Null),
    };
    Ok(value)
}
