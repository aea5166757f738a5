//! The EventType definition as Nakadi's API shapes it, and the rules a definition must
//! follow to be accepted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Nakadi's default retention: 2 days.
pub const DEFAULT_RETENTION_MS: u64 = 172_800_000;
/// The most partitions an event type may have.
pub const MAX_PARTITIONS: u32 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Undefined,
    Data,
    Business,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrichmentStrategy {
    MetadataEnrichment,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionStrategy {
    #[default]
    Random,
    Hash,
    UserDefined,
}

impl PartitionStrategy {
    pub const ALL: [&'static str; 3] = ["hash", "user_defined", "random"];
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompatibilityMode {
    Compatible,
    #[default]
    Forward,
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    #[default]
    Delete,
    Compact,
    CompactAndDelete,
}

impl CleanupPolicy {
    pub fn compacts(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Compact | CleanupPolicy::CompactAndDelete
        )
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaType {
    #[default]
    JsonSchema,
}

/// The schema of an event type: a JSON Schema (draft-04) carried as a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTypeSchema {
    #[serde(rename = "type", default)]
    pub schema_type: SchemaType,
    pub schema: String,
    /// Semver, set by the server ("1.0.0" first).
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub created_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTypeOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_time: Option<u64>,
}

/// Nakadi's sizing hint: the partition count is max(read, write parallelism).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTypeStatistics {
    #[serde(default)]
    pub messages_per_minute: u64,
    #[serde(default)]
    pub message_size: u64,
    #[serde(default)]
    pub read_parallelism: u32,
    #[serde(default)]
    pub write_parallelism: u32,
}

/// An event type, as POSTed, PUT and returned by `/event-types`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventType {
    pub name: String,
    pub owning_application: String,
    pub category: Category,
    #[serde(default)]
    pub enrichment_strategies: Vec<EnrichmentStrategy>,
    #[serde(default)]
    pub partition_strategy: PartitionStrategy,
    #[serde(default)]
    pub partition_key_fields: Vec<String>,
    #[serde(default)]
    pub compatibility_mode: CompatibilityMode,
    pub schema: EventTypeSchema,
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    #[serde(default)]
    pub options: EventTypeOptions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_statistic: Option<EventTypeStatistics>,
    /// Sluice: the partition count, explicitly. Else from `default_statistic`, else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key_fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_instance_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_owner_selector: Option<Value>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Audience {
    ComponentInternal,
    BusinessUnitInternal,
    CompanyInternal,
    ExternalPartner,
    ExternalPublic,
}

/// Nakadi's event type name rule: `[a-zA-Z][-0-9a-zA-Z_]*(\.[0-9a-zA-Z][-0-9a-zA-Z_]*)*`,
/// 1..=255 characters.
pub fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    name.split('.').enumerate().all(|(i, part)| {
        let mut chars = part.chars();
        let first_ok = match chars.next() {
            Some(c) if i == 0 => c.is_ascii_alphabetic(),
            Some(c) => c.is_ascii_alphanumeric(),
            None => false,
        };
        first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

impl EventType {
    /// The number of partitions this definition asks for.
    pub fn requested_partitions(&self) -> u32 {
        self.partition_count
            .or_else(|| {
                self.default_statistic
                    .as_ref()
                    .map(|s| s.read_parallelism.max(s.write_parallelism))
            })
            .unwrap_or(1)
            .max(1)
    }

    pub fn retention_ms(&self) -> u64 {
        self.options.retention_time.unwrap_or(DEFAULT_RETENTION_MS)
    }

    /// Every rule a definition breaks, in words a user can act on (empty = valid).
    /// Schema-dependent rules (key fields present and required) are checked when the
    /// schema is compiled.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !valid_name(&self.name) {
            out.push(format!(
                "name {:?} is invalid: it must match [a-zA-Z][-0-9a-zA-Z_]*(\\.[0-9a-zA-Z][-0-9a-zA-Z_]*)* \
                 and be at most 255 characters",
                self.name
            ));
        }
        if self.owning_application.trim().is_empty() {
            out.push("owning_application must not be empty".into());
        }
        let enriched = self
            .enrichment_strategies
            .contains(&EnrichmentStrategy::MetadataEnrichment);
        match self.category {
            Category::Undefined if enriched => {
                out.push("enrichment_strategies must be empty for category undefined".into());
            }
            Category::Data | Category::Business if !enriched => out.push(format!(
                "enrichment_strategies must contain metadata_enrichment for category {}",
                category_name(self.category)
            )),
            _ => {}
        }
        match self.partition_strategy {
            PartitionStrategy::Hash if self.partition_key_fields.is_empty() => {
                out.push("partition_strategy hash needs partition_key_fields".into());
            }
            PartitionStrategy::UserDefined if self.category == Category::Undefined => {
                out.push(
                    "partition_strategy user_defined is not available for category undefined"
                        .into(),
                );
            }
            _ => {}
        }
        if self.cleanup_policy.compacts() && self.category == Category::Undefined {
            out.push("cleanup_policy compact needs category business or data".into());
        }
        let partitions = self.requested_partitions();
        if partitions > MAX_PARTITIONS {
            out.push(format!(
                "at most {MAX_PARTITIONS} partitions, {partitions} requested"
            ));
        }
        if self.options.retention_time == Some(0) {
            out.push("options.retention_time must be positive".into());
        }
        for (what, map) in [("annotations", &self.annotations), ("labels", &self.labels)] {
            for (k, v) in map.iter().flat_map(|m| m.iter()) {
                if k.is_empty() || k.len() > 253 {
                    out.push(format!("{what} key {k:?} must be 1..=253 characters"));
                }
                if v.len() > 1000 {
                    out.push(format!("{what} value of {k:?} is longer than 1000 bytes"));
                }
            }
        }
        out
    }
}

pub fn category_name(c: Category) -> &'static str {
    match c {
        Category::Undefined => "undefined",
        Category::Data => "data",
        Category::Business => "business",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_nakadis_rule() {
        for ok in ["order.created", "a", "shop.price-changed_v2", "A.1b", "x-y"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a/b",
            "ä",
            &"a".repeat(256),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn partition_count_comes_from_the_explicit_field_or_the_statistic() {
        let json = r#"{"name":"a","owning_application":"x","category":"undefined",
            "schema":{"type":"json_schema","schema":"{}"}}"#;
        let mut et: EventType = serde_json::from_str(json).unwrap();
        assert_eq!(et.requested_partitions(), 1);
        et.default_statistic = Some(EventTypeStatistics {
            read_parallelism: 3,
            write_parallelism: 5,
            ..Default::default()
        });
        assert_eq!(et.requested_partitions(), 5);
        et.partition_count = Some(8);
        assert_eq!(et.requested_partitions(), 8);
        assert!(et.problems().is_empty());
    }
}
