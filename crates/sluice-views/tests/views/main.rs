//! The view engine against its reference: SQL compiled, events applied incrementally,
//! and the result held to a from-scratch evaluation after every step.

mod decode;
mod model;
mod sql;

use std::collections::HashMap;

use serde_json::{Value, json};
use sluice_views::{Catalog, SourceInfo, SourceKind};

/// The shop's event types, as the bus would describe them.
#[derive(Debug)]
pub struct Shop;

fn path(p: &str) -> Vec<String> {
    p.split('.').map(String::from).collect()
}

impl Catalog for Shop {
    fn source(&self, event_type: &str) -> Option<SourceInfo> {
        let table = |keys: &[&str]| SourceInfo {
            kind: SourceKind::Table {
                key: keys.iter().map(|k| path(k)).collect(),
            },
            data_change: true,
        };
        Some(match event_type {
            "shop.product" | "shop.price" => table(&["sku"]),
            "shop.stock" => table(&["sku", "location"]),
            "shop.offer" => table(&["offer_id"]),
            "shop.order" => SourceInfo {
                kind: SourceKind::Stream,
                data_change: false,
            },
            // Business events hash-partitioned by their id: a table unless read with STREAM().
            "shop.review" => SourceInfo {
                kind: SourceKind::Table {
                    key: vec![path("review_id")],
                },
                data_change: false,
            },
            _ => return None,
        })
    }
}

/// A data change event.
pub fn data(op: &str, data: Value) -> Value {
    json!({"metadata": {"eid": "e", "occurred_at": "2026-11-23T00:00:00Z"},
           "data_type": "x", "data_op": op, "data": data})
}

/// The key of a data change event's row for the shop's tables.
pub fn key_of(event_type: &str, data: &Value) -> String {
    let keys: &[&str] = match event_type {
        "shop.stock" => &["sku", "location"],
        "shop.offer" => &["offer_id"],
        _ => &["sku"],
    };
    keys.iter()
        .map(|k| data[k].to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The shop as the model holds it: the latest event per key, and the orders.
#[derive(Debug, Default)]
pub struct Tables {
    pub rows: HashMap<String, Vec<(String, Value)>>,
}

impl Tables {
    pub fn apply(&mut self, event_type: &str, event: &Value) {
        let rows = self.rows.entry(event_type.to_string()).or_default();
        if event_type == "shop.order" {
            rows.push((String::new(), event.clone()));
            return;
        }
        let key = key_of(event_type, &event["data"]);
        rows.retain(|(k, _)| *k != key);
        if event["data_op"] != "D" {
            rows.push((key, event.clone()));
        }
    }
}
