//! Values of view rows: a small SQL value type with a total order (so rows can be
//! keys of ordered and hashed state), and its conversions from and to JSON.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;

/// One value of a row.
#[derive(Clone, Debug)]
pub enum Datum {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text),
    /// An object or array taken whole from an event.
    Json(Arc<Value>),
}

/// How many bytes of text a value holds in place (no allocation): skus, ids, codes,
/// brands, locations. `Datum` stays 24 bytes.
const INLINE: usize = 22;

/// Text of a value: short text in place, longer text on the heap, shared by clones.
/// Equal texts always have the same form (the form follows from the length), and
/// equality, order and hash are those of the bytes (UTF-8 orders as `str` does).
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    /// The bytes past `len` are zero.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Shared(Arc<str>),
}

impl Text {
    pub fn new(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Text(Repr::Shared(Arc::from(s)))
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from a `str` (`new`), cut at its end: always UTF-8.
            Repr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Repr::Shared(s) => s,
        }
    }

    /// Whether the text is held in place (no allocation).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        if s.len() <= INLINE {
            Text::new(&s)
        } else {
            Text(Repr::Shared(Arc::from(s)))
        }
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        match (&self.0, &other.0) {
            // Unused bytes are zero: equal texts have equal arrays.
            (Repr::Inline { len: a, bytes: x }, Repr::Inline { len: b, bytes: y }) => {
                a == b && x == y
            }
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl Eq for Text {}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h);
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// A row: the values of a relation's columns, in its layout's order.
pub type Row = Arc<[Datum]>;

/// A key of the engine's maps: one value (most keys; no allocation of its own) or
/// several.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    One(Datum),
    Many(Box<[Datum]>),
}

impl Key {
    pub fn from_vec(mut v: Vec<Datum>) -> Key {
        if v.len() == 1 {
            Key::One(v.pop().expect("one value"))
        } else {
            Key::Many(v.into_boxed_slice())
        }
    }

    pub fn from_slice(v: &[Datum]) -> Key {
        match v {
            [one] => Key::One(one.clone()),
            many => Key::Many(many.into()),
        }
    }

    pub fn values(&self) -> &[Datum] {
        match self {
            Key::One(d) => std::slice::from_ref(d),
            Key::Many(b) => b,
        }
    }
}

impl Datum {
    pub fn str(s: &str) -> Datum {
        Datum::Str(Text::new(s))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// A JSON value as a datum: numbers that fit i64 are integers.
    pub fn from_json(v: &Value) -> Datum {
        match v {
            Value::Null => Datum::Null,
            Value::Bool(b) => Datum::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Datum::Int(i),
                None => Datum::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Datum::str(s),
            other => Datum::Json(Arc::new(other.clone())),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Datum::Null => Value::Null,
            Datum::Bool(b) => Value::Bool(*b),
            Datum::Int(i) => Value::from(*i),
            Datum::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Datum::Str(s) => Value::String(s.to_string()),
            Datum::Json(v) => (**v).clone(),
        }
    }

    /// The name of its type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Datum::Null => "null",
            Datum::Bool(_) => "boolean",
            Datum::Int(_) => "integer",
            Datum::Float(_) => "double",
            Datum::Str(_) => "text",
            Datum::Json(v) if v.is_array() => "array",
            Datum::Json(_) => "object",
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Datum::Null => 0,
            Datum::Bool(_) => 1,
            Datum::Int(_) | Datum::Float(_) => 2,
            Datum::Str(_) => 3,
            Datum::Json(_) => 4,
        }
    }
}

/// A total order: NULL first, then booleans, numbers (integers and doubles compared
/// as numbers), text, and JSON (by its text). Equal means interchangeable in state.
impl Ord for Datum {
    fn cmp(&self, other: &Datum) -> Ordering {
        match (self, other) {
            (Datum::Bool(a), Datum::Bool(b)) => a.cmp(b),
            (Datum::Int(a), Datum::Int(b)) => a.cmp(b),
            (Datum::Float(a), Datum::Float(b)) => a.total_cmp(b),
            (Datum::Int(a), Datum::Float(b)) => (*a as f64).total_cmp(b).then(Ordering::Less),
            (Datum::Float(a), Datum::Int(b)) => a.total_cmp(&(*b as f64)).then(Ordering::Greater),
            (Datum::Str(a), Datum::Str(b)) => a.cmp(b),
            (Datum::Json(a), Datum::Json(b)) => a.to_string().cmp(&b.to_string()),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

impl PartialOrd for Datum {
    fn partial_cmp(&self, other: &Datum) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Datum {
    fn eq(&self, other: &Datum) -> bool {
        match (self, other) {
            (Datum::Null, Datum::Null) => true,
            (Datum::Bool(a), Datum::Bool(b)) => a == b,
            (Datum::Int(a), Datum::Int(b)) => a == b,
            (Datum::Str(a), Datum::Str(b)) => a == b,
            // As the order has it (doubles by their total order, JSON by its text).
            (a, b) => a.cmp(b) == Ordering::Equal,
        }
    }
}

impl Eq for Datum {}

impl Hash for Datum {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Datum::Null => 0u8.hash(h),
            Datum::Bool(b) => (1u8, b).hash(h),
            // Int and Float are never equal (the order breaks ties by type).
            Datum::Int(i) => (2u8, i).hash(h),
            Datum::Float(f) => (3u8, f.to_bits()).hash(h),
            Datum::Str(s) => (4u8, s).hash(h),
            Datum::Json(v) => (5u8, v.to_string()).hash(h),
        }
    }
}

/// The text form used in keys and messages: text as is, others as JSON.
impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Null => f.write_str("null"),
            Datum::Bool(b) => write!(f, "{b}"),
            Datum::Int(i) => write!(f, "{i}"),
            Datum::Float(x) => write!(f, "{x}"),
            Datum::Str(s) => f.write_str(s),
            Datum::Json(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_is_inline_up_to_its_limit_and_compares_as_str() {
        assert_eq!(std::mem::size_of::<Datum>(), 24);
        let words = [
            "",
            "a",
            "sku-000000001",
            "ü-twenty-two-bytes-ü",
            &"x".repeat(23),
            "zz",
        ];
        for w in words {
            let t = Text::new(w);
            assert_eq!(t.as_str(), w);
            assert_eq!(t.is_inline(), w.len() <= INLINE, "{w}");
            assert_eq!(Text::from(w.to_string()), t);
        }
        for a in words {
            for b in words {
                assert_eq!(Text::new(a).cmp(&Text::new(b)), a.cmp(b), "{a} {b}");
            }
        }
    }

    #[test]
    fn json_round_trips_and_numbers_order_across_types() {
        for v in [
            json!(null),
            json!(true),
            json!(3),
            json!(2.5),
            json!("x"),
            json!([1]),
            json!({"a": 1}),
        ] {
            assert_eq!(Datum::from_json(&v).to_json(), v);
        }
        let mut xs = [
            Datum::str("a"),
            Datum::Float(2.5),
            Datum::Int(3),
            Datum::Null,
            Datum::Int(2),
            Datum::Bool(false),
        ];
        xs.sort();
        assert_eq!(
            xs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ["null", "false", "2", "2.5", "3", "a"]
        );
        assert_ne!(Datum::Int(2), Datum::Float(2.0), "distinct in state");
    }
}

/// The hasher of the state's hash tables: seeded at random per table, and the seed
/// written with the table's state, so that a restored table puts each row where the
/// written one had it. Rows come back in the order the written table held them, so
/// filling the restored table walks its memory forward instead of at random (each
/// insert into a table of millions is otherwise a cache miss or two).
#[derive(Clone, Debug)]
pub struct Seeded {
    pub seed: u64,
    inner: foldhash::fast::FixedState,
}

impl Seeded {
    pub fn with_seed(seed: u64) -> Seeded {
        Seeded {
            seed,
            inner: foldhash::fast::FixedState::with_seed(seed),
        }
    }
}

impl Default for Seeded {
    fn default() -> Seeded {
        use std::hash::BuildHasher;
        Seeded::with_seed(std::hash::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl std::hash::BuildHasher for Seeded {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.inner.build_hasher()
    }
}
