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

/// One event of a publish request: its text as sent (trimmed) and what `scan` found.
#[derive(Clone, Copy, Debug)]
pub struct EventText<'a> {
    text: &'a str,
    shape: Shape,
}

impl<'a> EventText<'a> {
    /// The event in `raw` (surrounding whitespace ignored).
    pub fn new(raw: &'a str) -> EventText<'a> {
        let text = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        EventText {
            text,
            shape: scan_value(text.as_bytes(), 0).0,
        }
    }

    pub fn as_str(&self) -> &'a str {
        self.text
    }

    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }
}

/// Splits a publish request's body, a JSON array, into its events in one pass, with
/// each event's `Shape` (so no event is scanned twice, and no separate pass over the
/// whole body is needed to find where events begin and end). Only the array's
/// structure is checked here; each event's own syntax is checked when it is parsed.
pub fn split_array(body: &str) -> Result<Vec<EventText<'_>>, String> {
    let b = body.as_bytes();
    let ws = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = ws(0);
    if b.get(i) != Some(&b'[') {
        return Err(format!("expected `[` at byte {i}"));
    }
    i = ws(i + 1);
    let mut events = Vec::new();
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            if i >= b.len() {
                return Err("the array is not closed".into());
            }
            let (shape, end) = scan_value(b, i);
            events.push(EventText {
                text: &body[i..end],
                shape,
            });
            i = ws(end);
            match b.get(i) {
                Some(b',') => i = ws(i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                Some(_) => return Err(format!("expected `,` or `]` at byte {i}")),
                None => return Err("the array is not closed".into()),
            }
        }
    }
    let end = ws(i);
    if end < b.len() {
        return Err(format!("trailing characters at byte {end}"));
    }
    Ok(events)
}

/// Scans the JSON value that starts at `start`; returns its shape (positions relative
/// to `start`) and where it ends. Tolerant: a malformed value ends somewhere, and its
/// parser reports it.
fn scan_value(raw: &[u8], start: usize) -> (Shape, usize) {
    let mut shape = Shape {
        members: 0,
        metadata_body: None,
        multiline: false,
    };
    let mut depth = 0usize;
    // The last string closed at depth 1, while it may still be a key.
    let mut last_key: Option<(usize, usize)> = None;
    let mut awaiting_metadata = false;
    let mut i = start;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                let from = i + 1;
                i = from;
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
                if depth == 0 {
                    return (shape, (i + 1).min(raw.len()));
                }
                last_key = (depth == 1).then_some((from, i));
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
                    shape.metadata_body = Some(i + 1 - start);
                }
                awaiting_metadata = false;
                depth += 1;
            }
            b'}' | b']' => {
                if depth <= 1 {
                    // The value's own end, or (depth 0) what follows a scalar.
                    return (shape, if depth == 0 { i } else { i + 1 });
                }
                depth -= 1;
                awaiting_metadata = false;
            }
            b',' if depth == 0 => return (shape, i),
            b' ' | b'\t' if depth == 0 => return (shape, i),
            b'\n' | b'\r' if depth == 0 => return (shape, i),
            b'\n' | b'\r' => shape.multiline = true,
            b',' => awaiting_metadata = false,
            _ => {}
        }
        i += 1;
    }
    (shape, raw.len())
}

/// Scans the text of one JSON value (tests).
#[cfg(test)]
pub(crate) fn scan(raw: &[u8]) -> Shape {
    scan_value(raw, 0).0
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

    /// The events found are exactly serde's elements of the array, each with the shape
    /// a scan of it alone finds.
    #[test]
    fn split_array_agrees_with_serde() {
        let bodies = [
            "[]",
            " [ ] ",
            r#"[{"a":1}]"#,
            "[\n {\"a\": [1, {\"b\": \"]\"}]} ,\n\t{\"metadata\":{\"eid\":\"x\"}} ]\n",
            r#"[1, -2.5e3, "s\"]", true, null, [], {}, [[["deep"]]], {"k":"\\"}]"#,
            r#"[{"a":"{[,:"},{"b":{"c":{"d":[1,2,{"e":"}"}]}}}]"#,
        ];
        for body in bodies {
            let serde: Vec<&serde_json::value::RawValue> = serde_json::from_str(body).unwrap();
            let ours = split_array(body).unwrap();
            let texts: Vec<&str> = ours.iter().map(EventText::as_str).collect();
            let expected: Vec<&str> = serde.iter().map(|r| r.get()).collect();
            assert_eq!(texts, expected, "{body}");
            for e in &ours {
                assert_eq!(e.shape(), scan(e.as_str().as_bytes()), "{}", e.as_str());
            }
        }
    }

    #[test]
    fn split_array_names_what_is_wrong() {
        for (body, says) in [
            ("", "expected `[` at byte 0"),
            (r#"{"a":1}"#, "expected `[` at byte 0"),
            ("[1,2", "not closed"),
            ("[1 2]", "expected `,` or `]` at byte 3"),
            ("[1] x", "trailing characters at byte 4"),
            ("[{\"a\":1}", "not closed"),
        ] {
            let err = split_array(body).unwrap_err();
            assert!(err.contains(says), "{body}: {err}");
        }
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
