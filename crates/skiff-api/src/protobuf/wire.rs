//! A hand-written protobuf wire-format reader: varints, fixed 32/64-bit values and
//! length-delimited bytes, over a borrowed slice, without allocating.
//!
//! Hand-written because no crate maps Kubernetes protobuf to Kubernetes JSON: prost and
//! friends decode into generated structs (k8s-pb has them, without serde), and the JSON
//! rules live in the Go struct tags, which our descriptor table carries instead. The
//! table-driven decoder only needs these few primitives.

use super::WireProblem;

/// One field value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl WireValue<'_> {
    /// The protobuf wire type number, for error messages.
    pub(super) fn wire_type(&self) -> u8 {
        match self {
            WireValue::Varint(_) => 0,
            WireValue::Fixed64(_) => 1,
            WireValue::Bytes(_) => 2,
            WireValue::Fixed32(_) => 5,
        }
    }
}

/// Iterates over the fields of one encoded message.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// The largest field number protobuf allows (2^29 - 1).
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    pub(super) fn next_field(&mut self) -> Option<Result<(u32, WireValue<'a>), WireProblem>> {
        if self.is_empty() {
            return None;
        }
        Some(self.field())
    }

    fn field(&mut self) -> Result<(u32, WireValue<'a>), WireProblem> {
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return Err(WireProblem::BadFieldNumber(number));
        }
        let field = u32::try_from(number).map_err(|_| WireProblem::BadFieldNumber(number))?;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(self.array(field)?)),
            2 => {
                let len = self.varint()?;
                WireValue::Bytes(self.take(field, len)?)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(self.array(field)?)),
            wire_type => {
                // 3 and 4 are proto2 groups, which Kubernetes never uses; 6 and 7 do not exist.
                return Err(WireProblem::UnsupportedWireType {
                    field,
                    wire_type: wire_type as u8,
                });
            }
        };
        Ok((field, value))
    }

    /// A base-128 varint of at most 10 bytes. Bits past the 64th are dropped, as Go does.
    pub(super) fn varint(&mut self) -> Result<u64, WireProblem> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireProblem::TruncatedVarint);
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireProblem::VarintTooLong)
    }

    fn take(&mut self, field: u32, len: u64) -> Result<&'a [u8], WireProblem> {
        let left = self.buf.len() - self.pos;
        let truncated = WireProblem::Truncated {
            field,
            needed: len,
            left,
        };
        let len = usize::try_from(len).map_err(|_| truncated.clone())?;
        if len > left {
            return Err(truncated);
        }
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: u32) -> Result<[u8; N], WireProblem> {
        let bytes = self.take(field, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // 1: varint 300, 2: fixed64 1, 3: bytes "hi", 4: fixed32 7
        let buf = [
            0x08, 0xac, 0x02, 0x11, 1, 0, 0, 0, 0, 0, 0, 0, 0x1a, 2, b'h', b'i', 0x25, 7, 0, 0, 0,
        ];
        let mut r = Reader::new(&buf);
        let fields: Vec<_> = std::iter::from_fn(|| r.next_field()).collect();
        assert_eq!(
            fields,
            vec![
                Ok((1, WireValue::Varint(300))),
                Ok((2, WireValue::Fixed64(1))),
                Ok((3, WireValue::Bytes(b"hi"))),
                Ok((4, WireValue::Fixed32(7))),
            ]
        );
    }

    #[test]
    fn negative_int32_is_a_ten_byte_varint() {
        let buf = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let mut r = Reader::new(&buf);
        assert_eq!(r.varint(), Ok(u64::MAX));
        assert!(r.is_empty());
    }

    #[test]
    fn rejects_bad_input() {
        fn next(buf: &[u8]) -> Option<Result<(u32, WireValue<'_>), WireProblem>> {
            Reader::new(buf).next_field()
        }
        assert_eq!(next(&[0x08]), Some(Err(WireProblem::TruncatedVarint)));
        let mut endless = vec![0x08];
        endless.extend([0xff; 11]);
        assert_eq!(next(&endless), Some(Err(WireProblem::VarintTooLong)));
        assert_eq!(next(&[0x00]), Some(Err(WireProblem::BadFieldNumber(0))));
        assert_eq!(
            next(&[0x0b]),
            Some(Err(WireProblem::UnsupportedWireType { field: 1, wire_type: 3 }))
        );
        assert_eq!(
            next(&[0x0a, 5, b'a']),
            Some(Err(WireProblem::Truncated {
                field: 1,
                needed: 5,
                left: 1
            }))
        );
        assert_eq!(
            next(&[0x09, 1, 2]),
            Some(Err(WireProblem::Truncated {
                field: 1,
                needed: 8,
                left: 2
            }))
        );
        assert_eq!(next(&[]), None);
    }
}
