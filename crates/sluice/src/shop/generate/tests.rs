//! The generator: the same seed gives the same events; every event it makes is valid
//! for its event type (published through the bus, which validates it); its day has
//! every kind of event, including late deliveries.

use std::sync::Arc;

use serde_json::Value;
use sluice_bus::{Bus, BusConfig, Published, Publisher};
use sluice_log::{EmbeddedConfig, EmbeddedLog, Log};

use super::super::{EVENT_TYPES, OFFER, SHIPMENT, STOCK, event_types};
use super::*;

const START: i64 = 1_795_000_000_000;

/// A catalog of `products`, then `n` events `gap_ms` apart.
fn day(seed: u64, products: usize, n: usize, gap_ms: i64) -> Vec<Event> {
    let mut shop = Shop::new(seed, 7);
    let mut events = shop.catalog(products, START);
    events.extend((0..n).map(|i| shop.next(START + gap_ms * i as i64)));
    events
}

#[test]
fn the_same_seed_makes_the_same_events() {
    let a = day(42, 30, 3000, 20);
    assert_eq!(a, day(42, 30, 3000, 20));
    let b = day(43, 30, 3000, 20);
    assert_ne!(a, b);
    // Numbers run in order, and the eids are unique and carry them.
    for (i, e) in a.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
        let v: Value = serde_json::from_str(&e.body).unwrap();
        let eid = v["metadata"]["eid"].as_str().unwrap();
        assert_eq!(eid.len(), 36);
        assert_eq!(u64::from_str_radix(&eid[24..], 16).unwrap(), e.seq);
    }
    // Another run of the same seed: the same events under eids of its own.
    let other = Shop::new(42, 8).catalog(30, START);
    assert_ne!(other[0].body, a[0].body);
    assert_eq!(
        other[0].body.split("\"metadata\"").next(),
        a[0].body.split("\"metadata\"").next()
    );
}

#[tokio::test]
async fn every_event_is_valid_for_its_event_type() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> =
        Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedConfig::default()).unwrap());
    let bus = Bus::open(log, BusConfig::default()).await.unwrap();
    for et in event_types() {
        bus.create_event_type(serde_json::from_value(et).unwrap())
            .await
            .unwrap();
    }
    // 200 s of the shop's clock: orders are shipped and delivered.
    let events = day(1, 100, 5000, 40);
    let mut by_kind = [0usize; 6];
    let mut ops = std::collections::BTreeSet::new();
    let mut late = 0;
    for e in &events {
        by_kind[e.kind] += 1;
        let v: Value = serde_json::from_str(&e.body).unwrap();
        if let Some(op) = v["data_op"].as_str() {
            ops.insert(op.to_string());
        }
        // Offers and stock rows are written as text: every field, none extra.
        let fields: &[&str] = match e.kind {
            OFFER => &[
                "condition",
                "dispatch_days",
                "offer_id",
                "price",
                "seller",
                "sku",
            ],
            STOCK => &["location", "location_type", "qty", "sku"],
            _ => &[],
        };
        if !fields.is_empty() {
            let keys: Vec<&str> = v["data"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(keys, fields, "{}", e.body);
        }
        if e.kind == SHIPMENT
            && let Some(at) = v["delivered_at"].as_str()
            && at > v["promised_delivery_at"].as_str().unwrap()
        {
            late += 1;
        }
        let published = bus
            .publish(
                EVENT_TYPES[e.kind],
                format!("[{}]", e.body).as_bytes(),
                &Publisher::default(),
            )
            .await
            .unwrap();
        assert!(
            matches!(published, Published::All(_)),
            "{} refused {}: {published:?}",
            EVENT_TYPES[e.kind],
            e.body
        );
    }
    assert!(by_kind.iter().all(|n| *n > 0), "{by_kind:?}");
    assert_eq!(ops.into_iter().collect::<Vec<_>>(), ["C", "D", "U"]);
    assert!(
        late > 0,
        "no late delivery among {} shipments",
        by_kind[SHIPMENT]
    );
}

#[test]
fn written_strings_read_back_as_themselves() {
    for s in [
        "SKU-000001",
        "say \"hi\"",
        r"C:\shop",
        "tab\there\nline\u{1}",
        "Zoë 🛒",
        "",
    ] {
        let mut out = String::new();
        quoted(&mut out, s);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
    }
}
