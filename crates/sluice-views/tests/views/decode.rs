//! Events read straight from their bytes (the path the runner takes) mean exactly
//! what the same events mean as JSON values (the path the model tests take).

use serde_json::{Value, json};
use sluice_views::compile;
use sluice_views::source::{Decoder, Event};

use crate::{Shop, data};

/// Every scan's change from bytes and from the value, for each event.
fn same_both_ways(sql: &str, event_type: &str, events: &[Value]) {
    let plan = compile(sql, &Shop).unwrap();
    let scans: Vec<_> = plan
        .scans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.event_type == event_type)
        .collect();
    assert!(!scans.is_empty(), "{sql} reads {event_type}");
    let decoder = Decoder::new(scans.iter().copied());
    for e in events {
        let from_bytes = decoder.decode(e.to_string().as_bytes()).unwrap();
        let from_value = decoder.read(e);
        assert_eq!(from_bytes, from_value, "{e}");
        for (k, (_, scan)) in scans.iter().enumerate() {
            assert_eq!(
                decoder.change(scan, k, &from_bytes),
                decoder.change(scan, k, &from_value),
                "{e}"
            );
        }
    }
}

#[test]
fn data_change_events_read_from_bytes_as_from_values() {
    let events = [
        data(
            "U",
            json!({"sku": "a", "name": "Shoe", "price": {"amount": 12, "currency": "EUR"}}),
        ),
        data(
            "C",
            json!({"sku": "b", "name": null, "price": {"amount": 1.5}}),
        ),
        data("D", json!({"sku": "c"})),
        // Members the view does not read, nested and of every type, are skipped.
        data(
            "U",
            json!({"sku": "d", "x": [1, {"y": [true, null]}], "price": [1, 2], "name": {"first": "n"}}),
        ),
        // Numbers beyond i64, negative, exponent.
        data(
            "U",
            json!({"sku": "e", "price": {"amount": 18446744073709551615u64}, "name": -3}),
        ),
        json!({"data_op": "U", "data": {"sku": "f", "price": {"amount": 1e3}}}),
        // No data, data null, no key, a data member named data_op.
        json!({"data_op": "U", "metadata": {"eid": "x"}}),
        json!({"data_op": "U", "data": null}),
        data("U", json!({"name": "keyless"})),
        data("U", json!({"sku": "g", "data_op": "D"})),
        // A duplicated member: the last one counts, as in a JSON value.
        json!({"data_op": "U", "data": {"sku": "h", "name": "first", "name": "second"}}),
    ];
    same_both_ways(
        r#"CREATE VIEW v AS SELECT sku, name, price.amount AS amount, price, metadata.occurred_at AS at FROM "shop.product""#,
        "shop.product",
        &events,
    );
    // A self-join: two scans of one event type share a decoder.
    same_both_ways(
        r#"CREATE VIEW v AS SELECT a.sku, b.name FROM "shop.product" a JOIN "shop.product" b ON a.name = b.sku"#,
        "shop.product",
        &events,
    );
}

#[test]
fn business_events_read_from_bytes_as_from_values() {
    let events = [
        json!({"metadata": {"eid": "1", "occurred_at": "2026-11-23T00:00:00Z"}, "order_id": "o1", "sku": "a", "qty": 2}),
        json!({"metadata": {"eid": "2"}, "order_id": "o2", "sku": "b", "qty": "two", "lines": [{"sku": "a"}]}),
        json!({"order_id": "o3"}),
        json!([1, 2]),
    ];
    same_both_ways(
        r#"CREATE VIEW v AS SELECT sku, SUM(qty) AS qty, MAX(metadata.occurred_at) AS last FROM "shop.order" GROUP BY sku"#,
        "shop.order",
        &events,
    );
}

#[test]
fn bytes_that_are_not_json_are_an_error() {
    let plan = compile(r#"CREATE VIEW v AS SELECT sku FROM "shop.price""#, &Shop).unwrap();
    let decoder = Decoder::new([(0, &plan.scans[0])]);
    for bad in [&b"{"[..], b"{\"data\": {\"sku\": \"a\"}} x", b"\xff", b""] {
        let e = decoder.decode(bad).unwrap_err();
        assert!(e.starts_with("not JSON"), "{e}");
    }
    assert!(matches!(decoder.decode(b"{}"), Ok(Event::Fields(_))));
}

/// Member names are matched after their escapes are read, and a name that is not
/// UTF-8 matches nothing (and is no error: the view does not ask for it).
#[test]
fn escaped_member_names_are_the_names_they_spell() {
    let plan = compile(
        r#"CREATE VIEW v AS SELECT sku, amount FROM "shop.price""#,
        &Shop,
    )
    .unwrap();
    let decoder = Decoder::new([(0, &plan.scans[0])]);
    let plain = br#"{"data_op": "U", "data": {"sku": "a", "amount": 7}}"#;
    let escaped =
        br#"{"data_op": "U", "d\u0061ta": {"\u0073ku": "a", "am\u006funt": 7, "x\ud800": 1}}"#;
    let from_plain = decoder.decode(plain).unwrap();
    assert_eq!(decoder.decode(escaped).unwrap(), from_plain);
    let mut raw = br#"{"data_op": "U", "data": {"sku": "a", "amount": 7, ""#.to_vec();
    raw.extend_from_slice(b"\xff\xfe\": 1}}");
    assert_eq!(decoder.decode(&raw).unwrap(), from_plain);
}
