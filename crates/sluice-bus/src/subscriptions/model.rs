//! The Subscription definition as Nakadi's API shapes it, and the rules it must follow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cursor::CursorOffset;

/// The annotation naming how many times an event is sent before it counts as unprocessable.
pub const MAX_SEND_COUNT_ANNOTATION: &str = "nakadi.zalando.org/subscription-max-event-send-count";
/// The annotation naming what happens to an unprocessable event.
pub const UNPROCESSABLE_POLICY_ANNOTATION: &str =
    "nakadi.zalando.org/subscription-unprocessable-event-policy";

/// Where a subscription starts reading partitions that have no committed cursor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Begin,
    #[default]
    End,
    Cursors,
}

/// A position in one partition of one event type, without a cursor token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCursor {
    pub event_type: String,
    pub partition: String,
    pub offset: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    #[serde(default)]
    pub id: String,
    pub owning_application: String,
    pub event_types: Vec<String>,
    #[serde(default = "default_group")]
    pub consumer_group: String,
    #[serde(default)]
    pub read_from: ReadFrom,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initial_cursors: Vec<PartitionCursor>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

fn default_group() -> String {
    "default".into()
}

/// What to do with an event that was sent too many times without being committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnprocessablePolicy {
    /// Skip it: commit past it.
    Skip,
    /// Skip it and publish it to the dead letter event type.
    DeadLetter,
}

/// A subscription's dead-letter settings (from its annotations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetters {
    pub max_send_count: u32,
    pub policy: UnprocessablePolicy,
}

impl Subscription {
    /// What identifies a subscription: creating one with the same key returns it.
    pub fn key(&self) -> (String, Vec<String>, String) {
        let mut types = self.event_types.clone();
        types.sort();
        types.dedup();
        (
            self.owning_application.clone(),
            types,
            self.consumer_group.clone(),
        )
    }

    /// The rules a definition breaks, each named (empty: valid). Checks that need the
    /// event types themselves (existence, partitions) are the caller's.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.owning_application.trim().is_empty() {
            out.push("owning_application must not be empty".into());
        }
        if self.event_types.is_empty() {
            out.push("event_types must name at least one event type".into());
        }
        if self.consumer_group.trim().is_empty() {
            out.push("consumer_group must not be empty".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for et in &self.event_types {
            if !seen.insert(et) {
                out.push(format!("event type {et:?} is listed twice"));
            }
        }
        if self.read_from == ReadFrom::Cursors && self.initial_cursors.is_empty() {
            out.push("read_from \"cursors\" needs initial_cursors".into());
        }
        for c in &self.initial_cursors {
            if !self.event_types.contains(&c.event_type) {
                out.push(format!(
                    "initial cursor for event type {:?}, which the subscription does not list",
                    c.event_type
                ));
            }
            if CursorOffset::parse(&c.offset).is_none() {
                out.push(format!(
                    "initial cursor offset {:?} of {}/{} is not a cursor offset",
                    c.offset, c.event_type, c.partition
                ));
            }
        }
        if let Err(e) = self.dead_letters() {
            out.push(e);
        }
        out
    }

    /// The dead-letter settings from the annotations; both must be set, or neither.
    pub fn dead_letters(&self) -> Result<Option<DeadLetters>, String> {
        let get = |k: &str| self.annotations.as_ref().and_then(|a| a.get(k));
        match (
            get(MAX_SEND_COUNT_ANNOTATION),
            get(UNPROCESSABLE_POLICY_ANNOTATION),
        ) {
            (None, None) => Ok(None),
            (Some(count), Some(policy)) => {
                let max_send_count = count
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (2..=10).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "annotation {MAX_SEND_COUNT_ANNOTATION} must be 2..10, not {count:?}"
                        )
                    })?;
                let policy = match policy.as_str() {
                    "SKIP_EVENT" => UnprocessablePolicy::Skip,
                    "DEAD_LETTER_QUEUE" => UnprocessablePolicy::DeadLetter,
                    other => {
                        return Err(format!(
                            "annotation {UNPROCESSABLE_POLICY_ANNOTATION} must be SKIP_EVENT or DEAD_LETTER_QUEUE, not {other:?}"
                        ));
                    }
                };
                Ok(Some(DeadLetters {
                    max_send_count,
                    policy,
                }))
            }
            _ => Err(format!(
                "annotations {MAX_SEND_COUNT_ANNOTATION} and {UNPROCESSABLE_POLICY_ANNOTATION} go together"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sub(v: Value) -> Subscription {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_key() {
        let s = sub(json!({"owning_application": "search", "event_types": ["b", "a"]}));
        assert_eq!(s.consumer_group, "default");
        assert_eq!(s.read_from, ReadFrom::End);
        assert!(s.problems().is_empty());
        let t = sub(json!({"owning_application": "search", "event_types": ["a", "b"]}));
        assert_eq!(s.key(), t.key(), "event type order does not matter");
    }

    #[test]
    fn problems_are_named() {
        let s = sub(json!({
            "owning_application": "", "event_types": ["a", "a"], "read_from": "cursors",
            "annotations": {MAX_SEND_COUNT_ANNOTATION: "11"}
        }));
        let p = s.problems().join("\n");
        for want in [
            "owning_application",
            "listed twice",
            "needs initial_cursors",
            "go together",
        ] {
            assert!(p.contains(want), "{want} in {p}");
        }
        let s = sub(json!({
            "owning_application": "x", "event_types": ["a"],
            "annotations": {MAX_SEND_COUNT_ANNOTATION: "1", UNPROCESSABLE_POLICY_ANNOTATION: "SKIP_EVENT"}
        }));
        assert!(s.problems().join("").contains("2..10"));
        let s = sub(json!({
            "owning_application": "x", "event_types": ["a"],
            "annotations": {MAX_SEND_COUNT_ANNOTATION: "3", UNPROCESSABLE_POLICY_ANNOTATION: "DEAD_LETTER_QUEUE"}
        }));
        assert_eq!(
            s.dead_letters(),
            Ok(Some(DeadLetters {
                max_send_count: 3,
                policy: UnprocessablePolicy::DeadLetter
            }))
        );
    }
}
