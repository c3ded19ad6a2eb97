//! A GGUF header as raw fields, independent of the crate's reader: parsed
//! from a known-good file, edited, and written back with the position and
//! kind of every field, so mutations can aim at counts, lengths and types.

/// A metadata value as stored: its type tag and bytes.
#[derive(Debug, Clone)]
pub(crate) enum RawValue {
    /// A fixed-size scalar of GGUF type `0`-`7` or `10`-`12`.
    Scalar(u32, Vec<u8>),
    /// A string (type 8).
    Str(Vec<u8>),
    /// An array (type 9) of elements of one type.
    Array(u32, Vec<RawValue>),
}

impl RawValue {
    fn type_id(&self) -> u32 {
        match self {
            RawValue::Scalar(t, _) => *t,
            RawValue::Str(_) => 8,
            RawValue::Array(..) => 9,
        }
    }
}

/// One tensor table entry.
#[derive(Debug, Clone)]
pub(crate) struct RawTensor {
    pub(crate) name: Vec<u8>,
    pub(crate) dims: Vec<u64>,
    pub(crate) type_id: u32,
    pub(crate) offset: u64,
}

/// A header: version, metadata in file order, tensor table.
#[derive(Debug, Clone)]
pub(crate) struct RawGguf {
    pub(crate) version: u32,
    pub(crate) kvs: Vec<(String, RawValue)>,
    pub(crate) tensors: Vec<RawTensor>,
}

/// What a field of the encoded header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// A u64 count, length, dim or offset.
    Length,
    /// A u32 type tag or number of dims.
    Tag,
    /// A 4-byte float value.
    F32,
    /// A 4-byte integer value.
    U32,
}

/// A field's position in the encoded bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) at: usize,
    pub(crate) kind: FieldKind,
}

fn scalar_size(t: u32) -> usize {
    match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => panic!("not a scalar type {t}"),
    }
}

struct Walker<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Walker<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.u64() as usize;
        self.take(n).to_vec()
    }
    fn value(&mut self, t: u32) -> RawValue {
        match t {
            8 => RawValue::Str(self.bytes()),
            9 => {
                let et = self.u32();
                let n = self.u64();
                RawValue::Array(et, (0..n).map(|_| self.value(et)).collect())
            }
            t => RawValue::Scalar(t, self.take(scalar_size(t)).to_vec()),
        }
    }
}

impl RawGguf {
    /// Parses a well-formed GGUF v2/v3 header; returns it and where it ends.
    pub(crate) fn parse(bytes: &[u8]) -> (RawGguf, usize) {
        let mut w = Walker { b: bytes, pos: 0 };
        assert_eq!(w.take(4), b"GGUF");
        let version = w.u32();
        let n_tensors = w.u64();
        let n_kvs = w.u64();
        let kvs = (0..n_kvs)
            .map(|_| {
                let key = String::from_utf8(w.bytes()).unwrap();
                let t = w.u32();
                (key, w.value(t))
            })
            .collect();
        let tensors = (0..n_tensors)
            .map(|_| {
                let name = w.bytes();
                let n_dims = w.u32();
                let dims = (0..n_dims).map(|_| w.u64()).collect();
                RawTensor {
                    name,
                    dims,
                    type_id: w.u32(),
                    offset: w.u64(),
                }
            })
            .collect();
        let end = w.pos;
        (
            RawGguf {
                version,
                kvs,
                tensors,
            },
            end,
        )
    }

    /// The value of a key.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut RawValue> {
        self.kvs.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Encodes the header, padded to `alignment`, and lists its fields.
    pub(crate) fn encode(&self, alignment: usize) -> (Vec<u8>, Vec<Field>) {
        let mut e = Encoder::default();
        e.out.extend_from_slice(b"GGUF");
        e.out.extend_from_slice(&self.version.to_le_bytes());
        e.length(self.tensors.len() as u64);
        e.length(self.kvs.len() as u64);
        for (key, v) in &self.kvs {
            e.length(key.len() as u64);
            e.out.extend_from_slice(key.as_bytes());
            e.tag(v.type_id());
            e.value(v);
        }
        for t in &self.tensors {
            e.length(t.name.len() as u64);
            e.out.extend_from_slice(&t.name);
            e.tag(t.dims.len() as u32);
            for &d in &t.dims {
                e.length(d);
            }
            e.tag(t.type_id);
            e.length(t.offset);
        }
        let padded = e.out.len().next_multiple_of(alignment);
        e.out.resize(padded, 0);
        (e.out, e.fields)
    }
}

/// Bytes being written, and the fields written so far.
#[derive(Default)]
struct Encoder {
    out: Vec<u8>,
    fields: Vec<Field>,
}

impl Encoder {
    fn field(&mut self, kind: FieldKind, bytes: &[u8]) {
        self.fields.push(Field {
            at: self.out.len(),
            kind,
        });
        self.out.extend_from_slice(bytes);
    }

    fn length(&mut self, v: u64) {
        self.field(FieldKind::Length, &v.to_le_bytes());
    }

    fn tag(&mut self, v: u32) {
        self.field(FieldKind::Tag, &v.to_le_bytes());
    }

    fn value(&mut self, v: &RawValue) {
        match v {
            RawValue::Scalar(6, bytes) => self.field(FieldKind::F32, bytes),
            RawValue::Scalar(4 | 5, bytes) => self.field(FieldKind::U32, bytes),
            RawValue::Scalar(_, bytes) => self.out.extend_from_slice(bytes),
            RawValue::Str(s) => {
                self.length(s.len() as u64);
                self.out.extend_from_slice(s);
            }
            RawValue::Array(t, items) => {
                self.tag(*t);
                self.length(items.len() as u64);
                for item in items {
                    self.value(item);
                }
            }
        }
    }
}
