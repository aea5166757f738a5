//! A compiled event type: its effective-schema validator and partitioning rule, and the
//! per-event pipeline of publishing: validate -> enrich -> partition.

use serde_json::Value;

use crate::effective::{self, SchemaProblems};
use crate::event_type::{Category, EventType, PartitionStrategy};
use crate::splice::{self, EventText};

/// The pipeline step an event failed at (Nakadi's `BatchItemResponse.step`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Validating,
    Enriching,
    Partitioning,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Validating => "validating",
            Step::Enriching => "enriching",
            Step::Partitioning => "partitioning",
        }
    }
}

/// Why one event of a batch was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemError {
    pub step: Step,
    pub detail: String,
}

impl ItemError {
    fn validating(detail: impl Into<String>) -> ItemError {
        ItemError {
            step: Step::Validating,
            detail: detail.into(),
        }
    }
}

/// What the server adds to each event of one publish request.
#[derive(Clone, Debug)]
pub struct Enrichment<'a> {
    pub received_at: &'a str,
    pub flow_id: Option<&'a str>,
    pub published_by: Option<&'a str>,
    pub max_event_bytes: usize,
}

/// An event ready to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub partition: u32,
    /// `metadata.eid`, when the event has one.
    pub eid: Option<String>,
    /// `metadata.partition_compaction_key`, for compacted event types.
    pub compaction_key: Option<String>,
    /// The enriched event as stored and delivered.
    pub bytes: Vec<u8>,
}

/// An event type ready to accept events.
#[derive(Debug)]
pub struct CompiledType {
    pub event_type: EventType,
    validator: jsonschema::Validator,
    key_paths: Vec<Vec<String>>,
}

impl CompiledType {
    /// Compiles `et` (its definition must already be free of `problems()`).
    pub fn compile(et: EventType) -> Result<CompiledType, SchemaProblems> {
        let user = effective::parse_user_schema(&et)?;
        let key_paths = effective::key_paths(&et, &user)?;
        let schema = effective::effective_schema(&et, user);
        let validator = jsonschema::draft4::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| SchemaProblems(vec![format!("schema cannot be compiled: {e}")]))?;
        Ok(CompiledType {
            event_type: et,
            validator,
            key_paths,
        })
    }

    pub fn name(&self) -> &str {
        &self.event_type.name
    }

    fn enriched(&self) -> bool {
        self.event_type.category != Category::Undefined
    }

    /// Validates, enriches and partitions one event: `event` parsed from `text`, as
    /// sent. `random` supplies the partition for the `random` strategy.
    pub fn prepare(
        &self,
        event: Value,
        text: &EventText<'_>,
        partitions: u32,
        ctx: &Enrichment<'_>,
        random: &mut impl FnMut(u32) -> u32,
    ) -> Result<Prepared, ItemError> {
        let raw = text.as_str();
        if raw.len() > ctx.max_event_bytes {
            return Err(ItemError::validating(format!(
                "event of {} bytes is larger than the limit of {} bytes",
                raw.len(),
                ctx.max_event_bytes
            )));
        }
        // The fast check first; errors are collected only for an invalid event.
        if !self.validator.is_valid(&event) {
            let errors: Vec<String> = self
                .validator
                .iter_errors(&event)
                .take(5)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    format!("#{at}: {e}")
                })
                .collect();
            return Err(ItemError::validating(errors.join("; ")));
        }
        let metadata = event.get("metadata");
        let field = |name: &str| metadata.and_then(|m| m.get(name)).and_then(Value::as_str);
        let eid = field("eid").map(String::from);
        let compaction_key = field("partition_compaction_key").map(String::from);
        if let Some(et) = field("event_type")
            && et != self.name()
        {
            return Err(ItemError::validating(format!(
                "metadata.event_type is {et:?}, but the event was published to {:?}",
                self.name()
            )));
        }
        let partition = self.partition_of(&event, partitions, random)?;
        let bytes = if self.enriched() {
            self.enrich(event, text, partition, ctx)?
        } else {
            let shape = text.shape();
            if !shape.multiline && shape.members == splice::members(&event) {
                raw.as_bytes().to_vec()
            } else {
                compact(&event, raw.len())?
            }
        };
        Ok(Prepared {
            partition,
            eid,
            compaction_key,
            bytes,
        })
    }

    /// The event with the server's metadata: spliced into the text as sent when that
    /// text says exactly what was validated (`splice.rs`), else re-serialised.
    fn enrich(
        &self,
        mut event: Value,
        text: &EventText<'_>,
        partition: u32,
        ctx: &Enrichment<'_>,
    ) -> Result<Vec<u8>, ItemError> {
        let md = event
            .get("metadata")
            .and_then(Value::as_object)
            .ok_or_else(|| ItemError {
                step: Step::Enriching,
                detail: "metadata is missing".into(),
            })?;
        let partition = partition.to_string();
        let flow_id = ctx.flow_id.filter(|_| !md.contains_key("flow_id"));
        let producer_set = md.contains_key("event_type") || md.contains_key("partition");
        let was_empty = md.is_empty();
        let fields = [
            ("received_at", Some(ctx.received_at)),
            ("version", Some(self.event_type.schema.version.as_str())),
            ("event_type", Some(self.event_type.name.as_str())),
            ("partition", Some(partition.as_str())),
            ("flow_id", flow_id),
            ("published_by", ctx.published_by),
        ];
        let (raw, shape) = (text.as_str(), text.shape());
        if let Some(at) = shape.metadata_body
            && !shape.multiline
            && !producer_set
            && shape.members == splice::members(&event)
        {
            let mut out = Vec::with_capacity(raw.len() + 160);
            out.extend_from_slice(&raw.as_bytes()[..at]);
            for (key, value) in &fields {
                if let Some(value) = value {
                    splice::push_field(&mut out, key, value);
                }
            }
            if was_empty {
                out.pop(); // the last field's comma: nothing follows it
            }
            out.extend_from_slice(&raw.as_bytes()[at..]);
            return Ok(out);
        }
        if let Some(md) = event.get_mut("metadata").and_then(Value::as_object_mut) {
            for (key, value) in fields {
                if let Some(value) = value {
                    md.insert(key.into(), Value::String(value.into()));
                }
            }
        }
        compact(&event, raw.len())
    }

    /// The partition of an event by the event type's strategy (`random` asks `random`).
    pub fn partition_of(
        &self,
        event: &Value,
        partitions: u32,
        random: &mut impl FnMut(u32) -> u32,
    ) -> Result<u32, ItemError> {
        let fail = |detail: String| ItemError {
            step: Step::Partitioning,
            detail,
        };
        match self.event_type.partition_strategy {
            PartitionStrategy::Random => Ok(random(partitions)),
            PartitionStrategy::UserDefined => {
                let p = event
                    .pointer("/metadata/partition")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        fail("partition_strategy user_defined needs metadata.partition".into())
                    })?;
                match p.parse::<u32>() {
                    Ok(n) if n < partitions => Ok(n),
                    _ => Err(fail(format!(
                        "metadata.partition {p:?} is not a partition of this event type (0..{partitions})"
                    ))),
                }
            }
            PartitionStrategy::Hash => {
                let mut sum: i32 = 0;
                for path in &self.key_paths {
                    let mut v = event;
                    for part in path {
                        v = v.get(part).ok_or_else(|| {
                            fail(format!("key field {} is missing", path.join(".")))
                        })?;
                    }
                    let text = match v {
                        Value::String(s) => java_hash(s),
                        other => java_hash(&other.to_string()),
                    };
                    sum = sum.wrapping_add(text);
                }
                Ok((i64::from(sum).unsigned_abs() % u64::from(partitions)) as u32)
            }
        }
    }
}

/// The event as compact JSON, in a buffer sized once.
fn compact(event: &Value, raw_len: usize) -> Result<Vec<u8>, ItemError> {
    let mut bytes = Vec::with_capacity(raw_len + 160);
    serde_json::to_writer(&mut bytes, event).map_err(|e| ItemError {
        step: Step::Enriching,
        detail: format!("cannot serialise the event: {e}"),
    })?;
    Ok(bytes)
}

/// Java's `String.hashCode` (over UTF-16 code units), which Nakadi's hash strategy sums,
/// so the same keys land in the same partitions as on Nakadi.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn business(schema: &str, strategy: &str, keys: &str) -> EventType {
        serde_json::from_str(&format!(
            r#"{{"name":"shop.price_changed","owning_application":"pricing","category":"business",
            "enrichment_strategies":["metadata_enrichment"],"partition_strategy":"{strategy}",
            "partition_key_fields":{keys},
            "schema":{{"type":"json_schema","schema":{},"version":"1.0.0"}}}}"#,
            serde_json::to_string(schema).unwrap()
        ))
        .unwrap()
    }

    const PRICE: &str = r#"{"type":"object","properties":{"sku":{"type":"string"},"amount":{"type":"integer"}},"required":["sku","amount"]}"#;

    fn ctx() -> Enrichment<'static> {
        Enrichment {
            received_at: "2026-11-22T10:00:00.000Z",
            flow_id: Some("flow-1"),
            published_by: None,
            max_event_bytes: 1_000_000,
        }
    }

    fn event(sku: &str) -> Value {
        json!({"sku": sku, "amount": 1999,
            "metadata": {"eid": "5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11", "occurred_at": "2026-11-22T09:59:59Z"}})
    }

    #[test]
    fn java_hash_matches_java() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn business_events_are_validated_enriched_and_hashed() {
        let ct = CompiledType::compile(business(PRICE, "hash", r#"["sku"]"#)).unwrap();
        let mut never = |_| unreachable!();
        let e = event("sku-1");
        let raw = e.to_string();
        let text = EventText::new(&raw);
        let p = ct.prepare(e.clone(), &text, 8, &ctx(), &mut never).unwrap();
        let again = ct.prepare(e.clone(), &text, 8, &ctx(), &mut never).unwrap();
        assert_eq!(
            p.partition, again.partition,
            "the same key, the same partition"
        );
        let stored: Value = serde_json::from_slice(&p.bytes).unwrap();
        assert_eq!(stored["metadata"]["event_type"], "shop.price_changed");
        assert_eq!(stored["metadata"]["version"], "1.0.0");
        assert_eq!(stored["metadata"]["flow_id"], "flow-1");
        assert_eq!(stored["metadata"]["partition"], p.partition.to_string());
        assert_eq!(
            p.eid.as_deref(),
            Some("5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11")
        );
    }

    /// Whatever path enrichment takes, the stored event is the validated event plus
    /// the server's fields, on one line.
    #[test]
    fn spliced_and_reserialised_events_agree() {
        let ct = CompiledType::compile(business(PRICE, "hash", r#"["sku"]"#)).unwrap();
        let mut never = |_| unreachable!();
        let sent = [
            // Spliced: compact, with spaces, with a flow id of the producer's own.
            r#"{"sku":"a","amount":1,"metadata":{"eid":"5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11","occurred_at":"2026-11-22T09:59:59Z"}}"#,
            r#"{ "metadata" : { "occurred_at" : "2026-11-22T09:59:59Z", "eid" : "5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11", "flow_id": "own" }, "sku" : "a", "amount" : 1 }"#,
            // Re-serialised: pretty-printed, a repeated key, the producer's event_type.
            "{\n \"sku\": \"a\",\n \"amount\": 1,\n \"metadata\": {\"eid\":\"5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11\",\"occurred_at\":\"2026-11-22T09:59:59Z\"}\n}",
            r#"{"sku":"a","amount":"x","amount":1,"metadata":{"eid":"5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11","occurred_at":"2026-11-22T09:59:59Z"}}"#,
            r#"{"sku":"a","amount":1,"metadata":{"event_type":"shop.price_changed","eid":"5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11","occurred_at":"2026-11-22T09:59:59Z"}}"#,
        ];
        for raw in sent {
            let parsed: Value = serde_json::from_str(raw).unwrap();
            let p = ct
                .prepare(parsed.clone(), &EventText::new(raw), 4, &ctx(), &mut never)
                .unwrap();
            let text = std::str::from_utf8(&p.bytes).unwrap();
            assert!(!text.contains('\n'), "one line: {text}");
            let stored: Value = serde_json::from_str(text).unwrap();
            let mut expected = parsed.clone();
            let md = expected["metadata"].as_object_mut().unwrap();
            md.insert("received_at".into(), json!("2026-11-22T10:00:00.000Z"));
            md.insert("version".into(), json!("1.0.0"));
            md.insert("event_type".into(), json!("shop.price_changed"));
            md.insert("partition".into(), json!(p.partition.to_string()));
            md.entry("flow_id").or_insert(json!("flow-1"));
            assert_eq!(stored, expected, "{raw}");
            assert_eq!(
                splice::members(&stored),
                splice::scan(&p.bytes).members,
                "no key twice in the stored text: {text}"
            );
        }
    }

    #[test]
    fn invalid_events_name_the_problem() {
        let ct = CompiledType::compile(business(PRICE, "random", "[]")).unwrap();
        let refuse = |e: Value, ctx: &Enrichment<'_>| {
            let raw = e.to_string();
            ct.prepare(e, &EventText::new(&raw), 1, ctx, &mut |_| 0)
                .unwrap_err()
        };
        let mut e = event("x");
        e["amount"] = json!("cheap");
        let err = refuse(e, &ctx());
        assert_eq!(err.step, Step::Validating);
        assert!(err.detail.contains("#/amount"), "{}", err.detail);
        let mut e = event("x");
        e["metadata"]["received_at"] = json!("2026-01-01T00:00:00Z");
        refuse(e, &ctx()); // server-set metadata is refused
        let mut e = event("x");
        e["metadata"]["eid"] = json!("not-a-uuid");
        refuse(e, &ctx());
        let small = Enrichment {
            max_event_bytes: 50,
            ..ctx()
        };
        let err = refuse(event("x"), &small);
        assert!(err.detail.contains("larger than the limit"));
    }

    #[test]
    fn key_fields_must_be_required() {
        let err = CompiledType::compile(business(PRICE, "hash", r#"["color"]"#)).unwrap_err();
        assert!(err.to_string().contains("color"), "{err}");
    }

    #[test]
    fn bad_schemas_are_refused() {
        let err = CompiledType::compile(business("{not json", "random", "[]")).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err =
            CompiledType::compile(business(r#"{"type":"nonsense"}"#, "random", "[]")).unwrap_err();
        assert!(err.to_string().contains("draft-04"), "{err}");
    }
}
