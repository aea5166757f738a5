//! Effective schemas: what an event of a category must look like (the user's schema
//! plus the metadata Nakadi requires), compiled once per schema version.

use serde_json::{Map, Value, json};

use crate::event_type::{Category, CompatibilityMode, EventType, PartitionStrategy};

/// Why a schema cannot be used; each entry names one problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct SchemaProblems(pub Vec<String>);

const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The `metadata` object producers send: `eid` and `occurred_at` required, the fields the
/// server sets (`received_at`, `version`, `published_by`) forbidden.
pub fn metadata_schema(compacted: bool) -> Value {
    let mut required = vec!["eid", "occurred_at"];
    if compacted {
        required.push("partition_compaction_key");
    }
    json!({
        "type": "object",
        "properties": {
            "eid": {"type": "string", "pattern": UUID_PATTERN},
            "event_type": {"type": "string"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "parent_eids": {"type": "array", "items": {"type": "string", "pattern": UUID_PATTERN}},
            "flow_id": {"type": "string"},
            "partition": {"type": "string"},
            "partition_compaction_key": {"type": "string", "minLength": 1},
            "span_ctx": {"type": "object", "additionalProperties": {"type": "string"}}
        },
        "required": required,
        "additionalProperties": false
    })
}

/// Parses and checks the user's schema string: JSON, an object, valid draft-04, and
/// (in `compatible` mode) free of the keywords that mode forbids.
pub fn parse_user_schema(et: &EventType) -> Result<Value, SchemaProblems> {
    let schema: Value = serde_json::from_str(&et.schema.schema)
        .map_err(|e| SchemaProblems(vec![format!("schema.schema is not valid JSON: {e}")]))?;
    if !schema.is_object() {
        return Err(SchemaProblems(vec![
            "schema.schema must be a JSON object".into(),
        ]));
    }
    let meta: Vec<String> = jsonschema::draft4::meta::validator()
        .iter_errors(&schema)
        .map(|e| {
            format!(
                "schema is not valid JSON Schema draft-04 at {}: {e}",
                pointer(&e.instance_path().to_string())
            )
        })
        .collect();
    if !meta.is_empty() {
        return Err(SchemaProblems(meta));
    }
    let mut problems = Vec::new();
    if et.compatibility_mode == CompatibilityMode::Compatible {
        forbidden_in_compatible(&schema, "#", &mut problems);
    }
    if et.category == Category::Business && schema.pointer("/properties/metadata").is_some() {
        problems.push("schema must not declare `metadata`: the server defines it".into());
    }
    if problems.is_empty() {
        Ok(schema)
    } else {
        Err(SchemaProblems(problems))
    }
}

fn pointer(p: &str) -> String {
    if p.is_empty() {
        "#".into()
    } else {
        format!("#{p}")
    }
}

fn forbidden_in_compatible(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for key in [
                "additionalProperties",
                "additionalItems",
                "not",
                "patternProperties",
            ] {
                if map.contains_key(key) {
                    out.push(format!(
                        "`{key}` at {at} is not allowed in compatibility_mode compatible"
                    ));
                }
            }
            for (k, child) in map {
                forbidden_in_compatible(child, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                forbidden_in_compatible(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Closes every object schema (`additionalProperties: false`, `additionalItems: false`
/// for tuple arrays), as Nakadi does for `compatible` mode: unknown fields are errors.
fn close(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let is_object =
                map.get("type") == Some(&json!("object")) || map.contains_key("properties");
            if is_object {
                map.entry("additionalProperties").or_insert(json!(false));
            }
            if map.get("items").is_some_and(Value::is_array) {
                map.entry("additionalItems").or_insert(json!(false));
            }
            map.iter_mut()
                .filter(|(k, _)| k.as_str() != "enum" && k.as_str() != "default")
                .for_each(|(_, child)| close(child));
        }
        Value::Array(items) => items.iter_mut().for_each(close),
        _ => {}
    }
}

/// The schema events of `et` are validated against.
pub fn effective_schema(et: &EventType, mut user: Value) -> Value {
    if et.compatibility_mode == CompatibilityMode::Compatible {
        close(&mut user);
    }
    let metadata = metadata_schema(et.cleanup_policy.compacts());
    match et.category {
        Category::Undefined => user,
        Category::Business => {
            let Value::Object(mut map) = user else {
                return user;
            };
            map.insert("type".into(), json!("object"));
            let props = map.entry("properties").or_insert_with(|| json!({}));
            if let Value::Object(props) = props {
                props.insert("metadata".into(), metadata);
            }
            let required = map.entry("required").or_insert_with(|| json!([]));
            if let Value::Array(r) = required
                && !r.contains(&json!("metadata"))
            {
                r.push(json!("metadata"));
            }
            Value::Object(map)
        }
        Category::Data => {
            let mut data = user;
            let definitions = data.as_object_mut().and_then(|m| m.remove("definitions"));
            let mut root = Map::new();
            root.insert("type".into(), json!("object"));
            root.insert(
                "properties".into(),
                json!({
                    "metadata": metadata,
                    "data_type": {"type": "string"},
                    "data_op": {"type": "string", "enum": ["C", "U", "D", "S"]},
                    "data": data
                }),
            );
            root.insert(
                "required".into(),
                json!(["metadata", "data_type", "data_op", "data"]),
            );
            root.insert("additionalProperties".into(), json!(false));
            if let Some(d) = definitions {
                root.insert("definitions".into(), d);
            }
            Value::Object(root)
        }
    }
}

/// Paths (as field lists) of the hash key fields, absolute in the event; checks each
/// is declared and required by the user's schema (for `data`, relative to `data`).
pub fn key_paths(et: &EventType, user: &Value) -> Result<Vec<Vec<String>>, SchemaProblems> {
    if et.partition_strategy != PartitionStrategy::Hash {
        return Ok(Vec::new());
    }
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for field in &et.partition_key_fields {
        let parts: Vec<String> = field.split('.').map(String::from).collect();
        if !required_path(user, &parts) {
            problems.push(format!(
                "partition_key_fields: `{field}` is not a required field of the schema{}",
                if et.category == Category::Data {
                    " (paths are relative to `data`)"
                } else {
                    ""
                }
            ));
        }
        let mut path = Vec::new();
        if et.category == Category::Data {
            path.push("data".to_string());
        }
        path.extend(parts);
        out.push(path);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(SchemaProblems(problems))
    }
}

fn required_path(schema: &Value, parts: &[String]) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return true;
    };
    let declared = schema.get("properties").and_then(|p| p.get(first));
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|f| f == first));
    match declared {
        Some(child) if required => required_path(child, rest),
        _ => false,
    }
}
