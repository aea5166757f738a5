//! Schema evolution (pure): the structural changes between two JSON Schemas, their
//! semver level under each compatibility mode, and the next version.
//!
//! Levels follow Nakadi's rules: text-only changes are PATCH; new optional properties
//! are MINOR; under `forward`, new required properties, an extended `required`, a
//! narrowed `additionalProperties` and a type added where there was none are MINOR
//! too; everything else is MAJOR, which only `none` accepts.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::event_type::CompatibilityMode;

/// The kinds of change, with Nakadi's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    DescriptionChanged,
    TitleChanged,
    PropertiesAdded,
    RequiredArrayExtended,
    AdditionalPropertiesNarrowed,
    TypeNarrowed,
    IdChanged,
    SchemaRemoved,
    TypeChanged,
    NumberOfItemsChanged,
    PropertyRemoved,
    DependencyChanged,
    CompositionMethodChanged,
    AttributeValueChanged,
    EnumArrayChanged,
    SubSchemaChanged,
    RequiredArrayChanged,
    AdditionalPropertiesChanged,
    AdditionalItemsChanged,
}

impl ChangeKind {
    pub fn name(self) -> &'static str {
        use ChangeKind::*;
        match self {
            DescriptionChanged => "DESCRIPTION_CHANGED",
            TitleChanged => "TITLE_CHANGED",
            PropertiesAdded => "PROPERTIES_ADDED",
            RequiredArrayExtended => "REQUIRED_ARRAY_EXTENDED",
            AdditionalPropertiesNarrowed => "ADDITIONAL_PROPERTIES_NARROWED",
            TypeNarrowed => "TYPE_NARROWED",
            IdChanged => "ID_CHANGED",
            SchemaRemoved => "SCHEMA_REMOVED",
            TypeChanged => "TYPE_CHANGED",
            NumberOfItemsChanged => "NUMBER_OF_ITEMS_CHANGED",
            PropertyRemoved => "PROPERTY_REMOVED",
            DependencyChanged => "DEPENDENCY_CHANGED",
            CompositionMethodChanged => "COMPOSITION_METHOD_CHANGED",
            AttributeValueChanged => "ATTRIBUTE_VALUE_CHANGED",
            EnumArrayChanged => "ENUM_ARRAY_CHANGED",
            SubSchemaChanged => "SUB_SCHEMA_CHANGED",
            RequiredArrayChanged => "REQUIRED_ARRAY_CHANGED",
            AdditionalPropertiesChanged => "ADDITIONAL_PROPERTIES_CHANGED",
            AdditionalItemsChanged => "ADDITIONAL_ITEMS_CHANGED",
        }
    }
}

/// One change, where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// A JSON pointer into the schema, `#/properties/price`.
    pub at: String,
    /// For `PropertiesAdded`: whether the new property is required.
    pub required: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.kind.name(), self.at)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Patch,
    Minor,
    Major,
}

/// The changes from `old` to `new`.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    diff_at(old, new, "#", &mut out);
    out
}

fn push(out: &mut Vec<Change>, kind: ChangeKind, at: &str) {
    out.push(Change {
        kind,
        at: at.to_string(),
        required: false,
    });
}

const TEXT: [&str; 4] = ["default", "examples", "$comment", "$schema"];
const HANDLED: [&str; 16] = [
    "id",
    "title",
    "description",
    "type",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "additionalItems",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "dependencies",
    "definitions",
];

fn diff_at(old: &Value, new: &Value, at: &str, out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    let (Value::Object(o), Value::Object(n)) = (old, new) else {
        push(out, ChangeKind::TypeChanged, at);
        return;
    };
    if o.get("id") != n.get("id") {
        push(out, ChangeKind::IdChanged, at);
    }
    if o.get("title") != n.get("title") {
        push(out, ChangeKind::TitleChanged, at);
    }
    if o.get("description") != n.get("description") {
        push(out, ChangeKind::DescriptionChanged, at);
    }
    match (o.get("type"), n.get("type")) {
        (None, Some(_)) => push(out, ChangeKind::TypeNarrowed, at),
        (a, b) if a != b => push(out, ChangeKind::TypeChanged, at),
        _ => {}
    }
    if o.get("enum") != n.get("enum") {
        push(out, ChangeKind::EnumArrayChanged, at);
    }
    properties(o, n, at, out);
    required(o, n, at, out);
    additional_properties(o, n, at, out);
    items(o, n, at, out);
    if o.get("additionalItems") != n.get("additionalItems") {
        push(out, ChangeKind::AdditionalItemsChanged, at);
    }
    composition(o, n, at, out);
    if o.get("dependencies") != n.get("dependencies") {
        push(out, ChangeKind::DependencyChanged, at);
    }
    definitions(o, n, at, out);
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for k in keys {
        let (k, ks) = (k.as_str(), k);
        if HANDLED.contains(&k) || TEXT.contains(&k) || k.starts_with("x-") {
            continue;
        }
        if o.get(ks) != n.get(ks) {
            push(out, ChangeKind::AttributeValueChanged, &format!("{at}/{k}"));
        }
    }
}

fn properties(o: &Map<String, Value>, n: &Map<String, Value>, at: &str, out: &mut Vec<Change>) {
    let empty = Map::new();
    let op = o
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let np = n
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let new_required = string_set(n.get("required"));
    for (k, v) in op {
        let here = format!("{at}/properties/{k}");
        match np.get(k) {
            None => push(out, ChangeKind::PropertyRemoved, &here),
            Some(nv) => diff_at(v, nv, &here, out),
        }
    }
    for k in np.keys().filter(|k| !op.contains_key(*k)) {
        out.push(Change {
            kind: ChangeKind::PropertiesAdded,
            at: format!("{at}/properties/{k}"),
            required: new_required.contains(k.as_str()),
        });
    }
}

fn string_set(v: Option<&Value>) -> BTreeSet<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn required(o: &Map<String, Value>, n: &Map<String, Value>, at: &str, out: &mut Vec<Change>) {
    let (or, nr) = (string_set(o.get("required")), string_set(n.get("required")));
    if or == nr {
        return;
    }
    let kind = if nr.is_superset(&or) {
        ChangeKind::RequiredArrayExtended
    } else {
        ChangeKind::RequiredArrayChanged
    };
    push(out, kind, &format!("{at}/required"));
}

fn additional_properties(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    at: &str,
    out: &mut Vec<Change>,
) {
    let here = format!("{at}/additionalProperties");
    match (o.get("additionalProperties"), n.get("additionalProperties")) {
        (a, b) if a == b => {}
        (None | Some(Value::Bool(true)), Some(Value::Object(_) | Value::Bool(false))) => {
            push(out, ChangeKind::AdditionalPropertiesNarrowed, &here);
        }
        (Some(a @ Value::Object(_)), Some(b @ Value::Object(_))) => diff_at(a, b, &here, out),
        _ => push(out, ChangeKind::AdditionalPropertiesChanged, &here),
    }
}

fn items(o: &Map<String, Value>, n: &Map<String, Value>, at: &str, out: &mut Vec<Change>) {
    let here = format!("{at}/items");
    match (o.get("items"), n.get("items")) {
        (a, b) if a == b => {}
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() != b.len() => {
            push(out, ChangeKind::NumberOfItemsChanged, &here);
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_at(x, y, &format!("{here}/{i}"), out);
            }
        }
        (Some(a @ Value::Object(_)), Some(b @ Value::Object(_))) => diff_at(a, b, &here, out),
        (None, Some(_)) => push(out, ChangeKind::TypeNarrowed, &here),
        _ => push(out, ChangeKind::SubSchemaChanged, &here),
    }
}

fn composition(o: &Map<String, Value>, n: &Map<String, Value>, at: &str, out: &mut Vec<Change>) {
    let methods = ["allOf", "anyOf", "oneOf", "not"];
    let used = |m: &Map<String, Value>| -> Vec<&str> {
        methods
            .iter()
            .copied()
            .filter(|k| m.contains_key(*k))
            .collect()
    };
    if used(o) != used(n) {
        push(out, ChangeKind::CompositionMethodChanged, at);
        return;
    }
    for m in methods {
        let here = format!("{at}/{m}");
        match (o.get(m), n.get(m)) {
            (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() != b.len() => {
                push(out, ChangeKind::NumberOfItemsChanged, &here);
            }
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    let before = out.len();
                    diff_at(x, y, &format!("{here}/{i}"), out);
                    if out[before..]
                        .iter()
                        .any(|c| c.kind > ChangeKind::TypeNarrowed)
                    {
                        push(out, ChangeKind::SubSchemaChanged, &format!("{here}/{i}"));
                    }
                }
            }
            (Some(a), Some(b)) => diff_at(a, b, &here, out),
            _ => {}
        }
    }
}

fn definitions(o: &Map<String, Value>, n: &Map<String, Value>, at: &str, out: &mut Vec<Change>) {
    let empty = Map::new();
    let od = o
        .get("definitions")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let nd = n
        .get("definitions")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (k, v) in od {
        let here = format!("{at}/definitions/{k}");
        match nd.get(k) {
            None => push(out, ChangeKind::SchemaRemoved, &here),
            Some(nv) => diff_at(v, nv, &here, out),
        }
    }
}

/// The level of one change under `mode`.
pub fn level(change: &Change, mode: CompatibilityMode) -> Level {
    use ChangeKind::*;
    match (change.kind, mode) {
        (DescriptionChanged | TitleChanged, _) => Level::Patch,
        (PropertiesAdded, CompatibilityMode::Compatible) if change.required => Level::Major,
        (PropertiesAdded, _) => Level::Minor,
        (
            RequiredArrayExtended | AdditionalPropertiesNarrowed | TypeNarrowed,
            CompatibilityMode::Forward,
        ) => Level::Minor,
        _ => Level::Major,
    }
}

/// The outcome of evolving a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evolution {
    pub changes: Vec<Change>,
    pub level: Level,
    /// The changes `mode` does not allow (empty = compatible).
    pub incompatible: Vec<Change>,
}

/// Classifies `old -> new` under `mode`. `none` accepts everything.
pub fn evolve(old: &Value, new: &Value, mode: CompatibilityMode) -> Evolution {
    let changes = diff(old, new);
    let highest = changes
        .iter()
        .map(|c| level(c, mode))
        .max()
        .unwrap_or(Level::None);
    let incompatible = if mode == CompatibilityMode::None {
        Vec::new()
    } else {
        changes
            .iter()
            .filter(|c| level(c, mode) == Level::Major)
            .cloned()
            .collect()
    };
    // Equal up to keywords that carry no meaning (`default`, `x-...`): a patch.
    let level = if changes.is_empty() && old != new {
        Level::Patch
    } else {
        highest
    };
    Evolution {
        changes,
        level,
        incompatible,
    }
}

/// The next semver after `version` for a change of `level`.
pub fn bump(version: &str, level: Level) -> String {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (ma, mi, pa) = (
        parts.next().unwrap_or(1),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match level {
        Level::None => format!("{ma}.{mi}.{pa}"),
        Level::Patch => format!("{ma}.{mi}.{}", pa + 1),
        Level::Minor => format!("{ma}.{}.0", mi + 1),
        Level::Major => format!("{}.0.0", ma + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"type": "object", "description": "a price",
            "properties": {"sku": {"type": "string"}, "amount": {"type": "integer"}},
            "required": ["sku"]})
    }

    fn kinds(e: &Evolution) -> Vec<&'static str> {
        e.changes.iter().map(|c| c.kind.name()).collect()
    }

    #[test]
    fn text_changes_are_patches() {
        let mut new = base();
        new["description"] = json!("the price of a sku");
        let e = evolve(&base(), &new, CompatibilityMode::Compatible);
        assert_eq!((e.level, e.incompatible.len()), (Level::Patch, 0));
        assert_eq!(bump("1.0.0", e.level), "1.0.1");
    }

    #[test]
    fn optional_properties_are_minor_everywhere_required_ones_only_under_forward() {
        let mut new = base();
        new["properties"]["currency"] = json!({"type": "string"});
        let e = evolve(&base(), &new, CompatibilityMode::Compatible);
        assert_eq!((e.level, e.incompatible.len()), (Level::Minor, 0));
        assert_eq!(bump("1.2.3", e.level), "1.3.0");
        new["required"] = json!(["sku", "currency"]);
        let e = evolve(&base(), &new, CompatibilityMode::Forward);
        assert_eq!(
            (e.level, e.incompatible.len()),
            (Level::Minor, 0),
            "{:?}",
            kinds(&e)
        );
        let e = evolve(&base(), &new, CompatibilityMode::Compatible);
        assert!(!e.incompatible.is_empty());
    }

    #[test]
    fn removals_and_type_changes_are_major() {
        let mut new = base();
        new["properties"].as_object_mut().unwrap().remove("amount");
        new["properties"]["sku"]["type"] = json!("integer");
        let e = evolve(&base(), &new, CompatibilityMode::Forward);
        let names: Vec<String> = e.incompatible.iter().map(ToString::to_string).collect();
        assert!(
            names.contains(&"PROPERTY_REMOVED at #/properties/amount".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"TYPE_CHANGED at #/properties/sku".to_string()),
            "{names:?}"
        );
        let e = evolve(&base(), &new, CompatibilityMode::None);
        assert!(e.incompatible.is_empty());
        assert_eq!(bump("1.3.0", e.level), "2.0.0");
    }

    #[test]
    fn narrowing_is_minor_under_forward_only() {
        let mut new = base();
        new["additionalProperties"] = json!(false);
        assert_eq!(
            evolve(&base(), &new, CompatibilityMode::Forward).level,
            Level::Minor
        );
        let mut new = base();
        new["properties"]["sku"]["maxLength"] = json!(10);
        let e = evolve(&base(), &new, CompatibilityMode::Forward);
        assert_eq!(kinds(&e), vec!["ATTRIBUTE_VALUE_CHANGED"]);
        assert_eq!(e.level, Level::Major);
        let mut new = base();
        new["properties"]["amount"]["enum"] = json!([1, 2]);
        assert_eq!(
            kinds(&evolve(&base(), &new, CompatibilityMode::Forward)),
            vec!["ENUM_ARRAY_CHANGED"]
        );
        assert_eq!(
            evolve(&base(), &base(), CompatibilityMode::Forward).level,
            Level::None
        );
    }
}
