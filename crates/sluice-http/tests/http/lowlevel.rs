//! The low-level API: reading from cursors in `X-Nakadi-Cursors`, and cursor arithmetic.

use std::time::Duration;

use serde_json::{Value, json};

use crate::streams::{Stream, WAIT, events};
use crate::{Server, price_changed, price_event};

fn cursor(o: u64) -> String {
    format!("001-0001-{o:018}")
}

/// One partition, events 0..5 (offsets 0..5).
fn five_events(s: &Server) {
    assert_eq!(
        s.post("/event-types", &price_changed("shop.price", 1))
            .status,
        201
    );
    let batch: Vec<Value> = (0..5)
        .map(|i| price_event(&format!("sku-{i}"), i))
        .collect();
    assert_eq!(
        s.post("/event-types/shop.price/events", &Value::Array(batch))
            .status,
        200
    );
}

#[test]
fn a_low_level_read_starts_after_the_given_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    five_events(&s);
    let from = |offset: &str| {
        let header = json!([{"partition": "0", "offset": offset}]).to_string();
        Stream::open_with(
            s.addr,
            "/event-types/shop.price/events?batch_limit=5&batch_flush_timeout=1&stream_limit=5",
            &[("X-Nakadi-Cursors", &header)],
            None,
        )
    };
    let st = from("begin");
    assert_eq!(st.status, 200, "{}", st.body);
    assert_eq!(st.content_type, "application/x-json-stream");
    let b = st.next_batch(WAIT).unwrap();
    assert_eq!(
        events(&b).len(),
        5,
        "BEGIN in any case: from the first event"
    );
    assert_eq!(
        b["cursor"],
        json!({"partition": "0", "offset": cursor(4)}),
        "no event_type or token"
    );
    let st = from(&cursor(2));
    let b = st.next_batch(WAIT).unwrap();
    assert_eq!(
        events(&b)
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [3, 4]
    );

    // Unavailable offsets, unknown partitions and a malformed header.
    let past = from(&cursor(9));
    assert_eq!(past.status, 412, "{}", past.body);
    assert!(past.body.contains("past the newest"), "{}", past.body);
    let header = json!([{"partition": "3", "offset": "BEGIN"}]).to_string();
    let st = Stream::open_with(
        s.addr,
        "/event-types/shop.price/events",
        &[("X-Nakadi-Cursors", &header)],
        None,
    );
    assert_eq!(st.status, 412);
    let st = Stream::open_with(
        s.addr,
        "/event-types/shop.price/events",
        &[("X-Nakadi-Cursors", "[{")],
        None,
    );
    assert_eq!(st.status, 400);

    // Without cursors: only what comes next.
    let tail = Stream::open(
        s.addr,
        "/event-types/shop.price/events?batch_flush_timeout=1",
        None,
    );
    assert!(tail.next_batch(Duration::from_millis(1500)).is_none());
    let one = vec![price_event("sku-9", 9)];
    assert_eq!(
        s.post("/event-types/shop.price/events", &Value::Array(one))
            .status,
        200
    );
    let b = tail.next_batch(WAIT).unwrap();
    assert_eq!(events(&b)[0]["seq"], 9);
}

#[test]
fn cursor_distances_lag_and_shifts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    five_events(&s);
    let c = |o: &str| json!({"partition": "0", "offset": o});
    let d = s.post(
        "/event-types/shop.price/cursor-distances",
        &json!([{"initial_cursor": c("BEGIN"), "final_cursor": c(&cursor(4))},
                {"initial_cursor": c(&cursor(3)), "final_cursor": c(&cursor(1))}]),
    );
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.json()[0]["distance"], 5);
    assert_eq!(d.json()[1]["distance"], -2);
    for path in ["cursors-lag", "cursor-lag"] {
        let lag = s.post(
            &format!("/event-types/shop.price/{path}"),
            &json!([c(&cursor(1))]),
        );
        assert_eq!(lag.status, 200, "{}", lag.body);
        assert_eq!(lag.json()[0]["unconsumed_events"], 3);
        assert_eq!(lag.json()[0]["newest_available_offset"], cursor(4));
    }
    let shifted = s.post(
        "/event-types/shop.price/shifted-cursors",
        &json!([{"partition": "0", "offset": "BEGIN", "shift": 2},
                {"partition": "0", "offset": cursor(4), "shift": -5}]),
    );
    assert_eq!(shifted.status, 200, "{}", shifted.body);
    assert_eq!(shifted.json(), json!([c(&cursor(1)), c("BEGIN")]));
    for (path, body, want) in [
        (
            "shifted-cursors",
            json!([{"partition": "0", "offset": cursor(4), "shift": 1}]),
            "past the newest",
        ),
        (
            "shifted-cursors",
            json!([{"partition": "0", "offset": "BEGIN", "shift": -1}]),
            "before the oldest",
        ),
        (
            "cursor-distances",
            json!([{"initial_cursor": c("BEGIN"), "final_cursor": {"partition": "1", "offset": "BEGIN"}}]),
            "different partitions",
        ),
        (
            "cursors-lag",
            json!([c("001-0001-000000000000000042")]),
            "past the newest",
        ),
        (
            "cursors-lag",
            json!([{"partition": "0", "offset": "nope"}]),
            "not a cursor offset",
        ),
    ] {
        let detail = s
            .post(&format!("/event-types/shop.price/{path}"), &body)
            .problem(422);
        assert!(detail.contains(want), "{path}: {detail}");
    }
}
