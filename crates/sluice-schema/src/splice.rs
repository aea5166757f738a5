//! Enrichment without re-serialisation: the server's metadata fields are spliced into
//! the event's text as the producer sent it, right after `"metadata":{`.
//!
//! Parsing into a `Value` is needed to validate; writing the `Value` back out cost as
//! much again (string escaping, map walks, allocations). The text may be reused only
//! when it says exactly what was validated, so `scan` checks, in one pass over the bytes:
//! - no object repeats a key: every member has exactly one `:` outside strings, so the
//!   text's member count equals the parsed tree's only when no key was repeated (a
//!   repeated key collapses into one member of the tree, last one winning);
//! - it is on one line (events are delivered one per line, so a pretty-printed event
//!   is re-serialised compactly instead);
//! - where the top-level `metadata` object's body starts (its key spelled without
//!   escapes).

use serde_json::Value;

/// What one pass over an event's text found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Object members in the text (`:` outside strings).
    pub members: usize,
    /// The byte just after the `{` of the top-level `metadata` object.
    pub metadata_body: Option<usize>,
    /// A line break outside strings (inside strings JSON has none).
    pub multiline: bool,
}

/// Scans the text of one syntactically valid JSON value.
pub(crate) fn scan(raw: &[u8]) -> Shape {
    let mut shape = Shape {
        members: 0,
        metadata_body: None,
        multiline: false,
    };
    let mut depth = 0usize;
    // The last string closed at depth 1, while it may still be a key.
    let mut last_key: Option<(usize, usize)> = None;
    let mut awaiting_metadata = false;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                let start = i + 1;
                i = start;
                // Strings are most of an event's bytes: skip to the next quote or
                // backslash at memchr's speed.
                loop {
                    match raw.get(i..).and_then(|r| memchr::memchr2(b'"', b'\\', r)) {
                        Some(at) if raw[i + at] == b'"' => {
                            i += at;
                            break;
                        }
                        Some(at) => i += at + 2, // an escape: skip the escaped byte too
                        None => {
                            i = raw.len();
                            break;
                        }
                    }
                }
                last_key = (depth == 1).then_some((start, i));
            }
            b':' => {
                shape.members += 1;
                if depth == 1 {
                    awaiting_metadata = last_key.is_some_and(|(s, e)| &raw[s..e] == b"metadata");
                }
                last_key = None;
            }
            b'{' | b'[' => {
                if awaiting_metadata && raw[i] == b'{' && shape.metadata_body.is_none() {
                    shape.metadata_body = Some(i + 1);
                }
                awaiting_metadata = false;
                depth += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                awaiting_metadata = false;
            }
            b'\n' | b'\r' => shape.multiline = true,
            b',' => awaiting_metadata = false,
            _ => {}
        }
        i += 1;
    }
    shape
}

/// Object members in a parsed tree, at every depth.
pub(crate) fn members(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.len() + m.values().map(members).sum::<usize>(),
        Value::Array(a) => a.iter().map(members).sum(),
        _ => 0,
    }
}

/// Appends `"key":<value as a JSON string>,` to `out`.
pub(crate) fn push_field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    push_str(out, value);
    out.push(b',');
}

/// Appends `s` as a JSON string literal.
fn push_str(out: &mut Vec<u8>, s: &str) {
    let plain = s
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f);
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(s: &str) -> Shape {
        scan(s.as_bytes())
    }

    #[test]
    fn finds_the_top_level_metadata_body() {
        let s = r#"{"sku":"a","metadata":{"eid":"x"}}"#;
        let at = shape(s).metadata_body.unwrap();
        assert_eq!(&s[at..at + 5], r#""eid""#);
        let s = r#"{ "metadata" : { "eid" : "x" } }"#;
        let at = shape(s).metadata_body.unwrap();
        assert_eq!(&s[at..].trim_start()[..5], r#""eid""#);
    }

    #[test]
    fn ignores_metadata_that_is_nested_or_only_a_value() {
        assert_eq!(
            shape(r#"{"a":{"metadata":{}},"b":"metadata"}"#).metadata_body,
            None
        );
        assert_eq!(shape(r#"{"a":"metadata","b":{}}"#).metadata_body, None);
        assert_eq!(shape(r#"["metadata",{}]"#).metadata_body, None);
        assert_eq!(
            shape(r#"{"m\u0065tadata":{}}"#).metadata_body,
            None,
            "an escaped key is not recognised (the caller re-serialises)"
        );
    }

    #[test]
    fn counts_members_outside_strings() {
        let s = r#"{"a":"x:y","b":{"c":[1,{"d":"\":"}]}}"#;
        let v: Value = serde_json::from_str(s).unwrap();
        assert_eq!(shape(s).members, 4);
        assert_eq!(members(&v), 4);
        let dup = r#"{"a":1,"b":{"c":2,"c":3}}"#;
        let v: Value = serde_json::from_str(dup).unwrap();
        assert_ne!(shape(dup).members, members(&v), "a repeated key shows");
    }

    #[test]
    fn sees_line_breaks_outside_strings_only() {
        assert!(!shape(r#"{"a":"x\ny"}"#).multiline);
        assert!(shape("{\n\"a\":1}").multiline);
    }

    #[test]
    fn fields_are_escaped_when_needed() {
        let mut out = Vec::new();
        push_field(&mut out, "flow_id", "plain-1");
        push_field(&mut out, "published_by", "quote\"d\u{e9}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"flow_id\":\"plain-1\",\"published_by\":\"quote\\\"d\u{e9}\","
        );
    }
}
