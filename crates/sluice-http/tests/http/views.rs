//! SQL views over HTTP, black-box: defined with POST /views, kept fresh from
//! published events, read by key and by range, with read-your-writes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Reply, Server, uuid};

/// A data change event type keyed (hash-partitioned) by `keys`.
pub(crate) fn data_type(name: &str, keys: &[&str], properties: Value) -> Value {
    let schema = json!({"type": "object", "properties": properties, "required": keys});
    json!({
        "name": name,
        "owning_application": "catalog",
        "category": "data",
        "enrichment_strategies": ["metadata_enrichment"],
        "partition_strategy": "hash",
        "partition_key_fields": keys,
        "partition_count": 2,
        "schema": {"type": "json_schema", "schema": schema.to_string()}
    })
}

pub(crate) fn shop(s: &Server) {
    for et in [
        data_type(
            "shop.product",
            &["sku"],
            json!({"sku": {"type": "string"}, "name": {"type": "string"}, "brand": {"type": "string"}}),
        ),
        data_type(
            "shop.price",
            &["sku"],
            json!({"sku": {"type": "string"}, "amount": {}}),
        ),
        data_type(
            "shop.stock",
            &["sku", "location"],
            json!({"sku": {"type": "string"}, "location": {"type": "string"}, "qty": {"type": "integer"}}),
        ),
    ] {
        let r = s.post("/event-types", &et);
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

pub(crate) static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    /// Where this test's publishes wrote: (event type, partition) to the last cursor.
    pub(crate) static WRITTEN: std::cell::RefCell<std::collections::BTreeMap<(String, String), String>> =
        Default::default();
}

/// Publishes data change events; returns the response.
pub(crate) fn change(s: &Server, event_type: &str, op: &str, data: Value) -> Reply {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let event = json!({
        "metadata": {"eid": uuid(n), "occurred_at": "2026-11-23T10:00:00Z"},
        "data_type": event_type, "data_op": op, "data": data
    });
    let r = s.post(
        &format!("/event-types/{event_type}/events"),
        &json!([event]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    remember_written(&r);
    r
}

/// Keeps where a publish wrote (its X-Sluice-Written), for `everything_written`.
pub(crate) fn remember_written(r: &Reply) {
    let written = r
        .header("x-sluice-written")
        .expect("the publish says where it wrote");
    WRITTEN.with(|w| {
        for part in written.split(';') {
            let mut it = part.rsplitn(3, ':');
            let (c, p, t) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            w.borrow_mut()
                .insert((t.to_string(), p.to_string()), c.to_string());
        }
    });
}

/// Every cursor this test wrote at, as X-Sluice-Wait-For wants them.
pub(crate) fn everything_written() -> String {
    WRITTEN.with(|w| {
        w.borrow()
            .iter()
            .map(|((t, p), c)| format!("{t}:{p}:{c}"))
            .collect::<Vec<_>>()
            .join(";")
    })
}

const LISTING: &str = r#"CREATE VIEW product_listing AS
SELECT p.sku, p.name, UPPER(p.brand) AS brand, pr.amount AS price,
       COALESCE(s.qty, 0) AS stock
FROM "shop.product" p
JOIN "shop.price" pr ON pr.sku = p.sku
LEFT JOIN (SELECT sku, SUM(qty) AS qty FROM "shop.stock" GROUP BY sku) s ON s.sku = p.sku"#;

/// Reads a row once the view applied everything this test wrote.
pub(crate) fn row_after(s: &Server, view: &str, key: &str) -> Reply {
    let r = s.get_with(
        &format!("/views/{view}/rows/{key}?wait_ms=5000"),
        &[("X-Sluice-Wait-For", &everything_written())],
    );
    assert_eq!(r.header("x-sluice-caught-up"), Some("true"), "{}", r.body);
    r
}

#[test]
fn a_joined_view_follows_every_change_and_reads_its_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    let r = s.post("/views", &json!({"sql": LISTING}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["name"], "product_listing");
    assert_eq!(r.json()["key"], json!(["sku"]));

    // Complete only with a price.
    change(
        &s,
        "shop.product",
        "C",
        json!({"sku": "sku-1", "name": "Boot", "brand": "acme"}),
    );
    change(
        &s,
        "shop.stock",
        "C",
        json!({"sku": "sku-1", "location": "berlin", "qty": 3}),
    );
    assert_eq!(row_after(&s, "product_listing", "sku-1").status, 404);
    change(
        &s,
        "shop.price",
        "C",
        json!({"sku": "sku-1", "amount": 4999}),
    );
    let r = row_after(&s, "product_listing", "sku-1");
    assert_eq!(
        r.json(),
        json!({"sku": "sku-1", "name": "Boot", "brand": "ACME", "price": 4999, "stock": 3})
    );
    // A product and stock without a price changed no visible row; the price made one.
    let status = s.get("/views/product_listing").json();
    assert_eq!(status["row_changes"], 1);
    // One insertion behind it (the inner join made nothing before the price).
    assert_eq!(status["engine_changes"], 1);

    // Stock summed over locations; updates and deletes on any side.
    change(
        &s,
        "shop.stock",
        "C",
        json!({"sku": "sku-1", "location": "paris", "qty": 4}),
    );
    change(
        &s,
        "shop.price",
        "U",
        json!({"sku": "sku-1", "amount": 3999}),
    );
    let r = row_after(&s, "product_listing", "sku-1").json();
    assert_eq!(
        (r["price"].clone(), r["stock"].clone()),
        (json!(3999), json!(7))
    );
    change(
        &s,
        "shop.stock",
        "D",
        json!({"sku": "sku-1", "location": "berlin"}),
    );
    assert_eq!(row_after(&s, "product_listing", "sku-1").json()["stock"], 4);
    change(&s, "shop.product", "D", json!({"sku": "sku-1"}));
    assert_eq!(row_after(&s, "product_listing", "sku-1").status, 404);

    // Ranges in key order.
    for i in 0..5 {
        change(
            &s,
            "shop.product",
            "C",
            json!({"sku": format!("k-{i}"), "name": "n", "brand": "b"}),
        );
        change(
            &s,
            "shop.price",
            "C",
            json!({"sku": format!("k-{i}"), "amount": i}),
        );
    }
    row_after(&s, "product_listing", "k-4");
    let keys = |r: Reply| -> Vec<String> {
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["sku"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        keys(s.get("/views/product_listing/rows?prefix=k-&limit=2")),
        ["k-0", "k-1"]
    );
    assert_eq!(
        keys(s.get("/views/product_listing/rows?prefix=k-&after=k-1&limit=2")),
        ["k-2", "k-3"]
    );
    assert_eq!(
        keys(s.get("/views/product_listing/rows?prefix=zzz")),
        Vec::<String>::new()
    );

    let status = s.get("/views/product_listing").json();
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(status["rows"], 5);
    // 1, then 1 or 2 (the paris stock and the new price, in one step or two), the
    // berlin delete, the product delete, and the five new keys.
    let changes = status["row_changes"].as_u64().unwrap();
    assert!((9..=10).contains(&changes), "{status}");
    let sources = status["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 6, "3 event types x 2 partitions: {status}");
    assert!(sources.iter().all(|x| x["lag_events"] == 0), "{status}");
    assert_eq!(s.get("/views").json()["items"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_views_are_refused_with_a_clear_problem_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    let cases = [
        (
            json!({"sql": "CREATE VIEW v AS SELEC sku FROM x"}),
            422,
            "line 1, column 18",
        ),
        (
            json!({"sql": "CREATE VIEW v AS SELECT sku FROM \"shop.nothing\""}),
            422,
            "event type or view `shop.nothing` does not exist",
        ),
        (
            json!({"sql": "CREATE VIEW v AS SELECT p.sku FROM \"shop.product\" p FULL JOIN \"shop.price\" q ON q.sku = p.sku"}),
            422,
            "INNER and LEFT joins",
        ),
        (
            json!({"sql": "CREATE VIEW \"../x\" AS SELECT sku FROM \"shop.product\""}),
            422,
            "view name",
        ),
        (
            json!({"sql": "CREATE VIEW v AS SELECT sku FROM \"shop.product\"", "on_error": "explode"}),
            422,
            "unknown variant `explode`, expected `skip` or `stop`",
        ),
        (json!({"query": "x"}), 422, "sql"),
    ];
    for (body, status, want) in cases {
        let r = s.post("/views", &body);
        let detail = r.problem(status);
        assert!(detail.contains(want), "{body}: {detail}");
    }
    let r = s.send("POST", "/views", "application/json", b"{".to_vec());
    r.problem(400);
    assert_eq!(
        s.get("/views").json()["items"],
        json!([]),
        "nothing was created"
    );

    let sql = json!({"sql": "CREATE VIEW v AS SELECT sku, name FROM \"shop.product\""});
    assert_eq!(s.post("/views", &sql).status, 201);
    assert!(
        s.post("/views", &sql)
            .problem(409)
            .contains("already exists")
    );
    assert!(s.get("/views/nope").problem(404).contains("nope"));
    assert!(s.get("/views/nope/rows/x").problem(404).contains("nope"));
    assert!(
        s.get("/views/v/rows/absent")
            .problem(404)
            .contains("absent")
    );
    let put = s.put("/views/other", &sql);
    assert!(put.problem(422).contains("not `other`"));
    let r = s.get_with("/views/v/rows/x", &[("X-Sluice-Wait-For", "garbage")]);
    r.problem(400);
    assert!(
        s.get("/views/v/rows?limit=0")
            .problem(422)
            .contains("limit")
    );
    // An event type a view reads cannot be deleted; once the view is gone it can.
    let r = s.delete("/event-types/shop.product");
    assert!(r.problem(409).contains("read by views v"), "{}", r.body);
    assert_eq!(s.delete("/views/v").status, 204);
    assert_eq!(s.delete("/views/v").status, 404);
    if crate::storage_has(crate::Needs::TopicDeletion) {
        assert_eq!(s.delete("/event-types/shop.product").status, 200);
    }
}

#[test]
fn an_event_a_view_cannot_compute_is_skipped_with_its_cursor_and_other_views_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    let strict = json!({"sql": "CREATE VIEW cents AS SELECT sku, CAST(amount AS BIGINT) * 100 AS cents FROM \"shop.price\""});
    assert_eq!(s.post("/views", &strict).status, 201);
    let stop = json!({"sql": "CREATE VIEW cents_stop AS SELECT sku, CAST(amount AS BIGINT) AS a FROM \"shop.price\"", "on_error": "stop"});
    assert_eq!(s.post("/views", &stop).status, 201);
    let plain = json!({"sql": "CREATE VIEW prices AS SELECT sku, amount FROM \"shop.price\""});
    assert_eq!(s.post("/views", &plain).status, 201);

    change(&s, "shop.price", "C", json!({"sku": "a", "amount": "12"}));
    change(
        &s,
        "shop.price",
        "C",
        json!({"sku": "b", "amount": "twelve"}),
    );
    change(&s, "shop.price", "C", json!({"sku": "c", "amount": 7}));
    assert_eq!(row_after(&s, "cents", "c").json()["cents"], 700);
    assert_eq!(row_after(&s, "prices", "b").json()["amount"], "twelve");
    assert_eq!(s.get("/views/cents/rows/a").json()["cents"], 1200);
    assert_eq!(s.get("/views/cents/rows/b").status, 404, "skipped");

    let status = s.get("/views/cents").json();
    assert_eq!(status["status"], "running");
    assert_eq!(status["errors"]["skipped"], 1, "{status}");
    let e = &status["errors"]["recent"][0];
    assert_eq!(e["event_type"], "shop.price");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("cannot cast text twelve to integer"),
        "{e}"
    );
    assert!(e["offset"].as_str().unwrap().starts_with("001-"), "{e}");

    // The stopping view stopped at that event, and says where.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let st = s.get("/views/cents_stop").json();
        if st["status"] == "stopped" || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status["status"], "stopped", "{status}");
    assert_eq!(status["stopped_at"]["offset"], e["offset"], "{status}");
}

#[test]
fn a_changed_view_is_built_beside_the_old_one_and_switched_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    let v1 = "CREATE VIEW names AS SELECT sku, name FROM \"shop.product\"";
    assert_eq!(s.post("/views", &json!({"sql": v1})).status, 201);
    for i in 0..300 {
        change(
            &s,
            "shop.product",
            "C",
            json!({"sku": format!("p{i:03}"), "name": format!("n{i}"), "brand": "b"}),
        );
    }
    row_after(&s, "names", "p299");

    // Readers never see a row of neither version, nor a missing one.
    let v2 = "CREATE VIEW names AS SELECT sku, UPPER(name) AS name FROM \"shop.product\"";
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|t| {
        let reader = t.spawn(|| {
            let (mut old, mut new) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = s.get("/views/names/rows/p150");
                assert_eq!(r.status, 200, "{}", r.body);
                match r.json()["name"].as_str().unwrap() {
                    "n150" => {
                        assert_eq!(new, 0, "back to the old view after the switch");
                        old += 1;
                    }
                    "N150" => new += 1,
                    other => panic!("{other}"),
                }
                let all = s.get("/views/names/rows?limit=1000").json();
                assert_eq!(all["items"].as_array().unwrap().len(), 300, "a whole view");
            }
            (old, new)
        });
        let r = s.put("/views/names", &json!({"sql": v2}));
        assert_eq!(r.status, 200, "{}", r.body);
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.get("/views/names/rows/p150").json()["name"] != "N150" {
            assert!(Instant::now() < deadline, "the new version never took over");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (old, new) = reader.join().unwrap();
        assert!(new > 0, "old {old}, new {new}");
    });
    assert_eq!(s.get("/views/names").json()["sql"], v2);
}

/// A new subscription to an event type from its beginning, streamed with `params`.
fn subscribe(s: &Server, app: &str, event_type: &str, params: &str) -> crate::streams::Stream {
    let sub = json!({"owning_application": app, "event_types": [event_type], "read_from": "begin"});
    let id = s.post("/subscriptions", &sub).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/subscriptions/{id}/events?{params}");
    crate::streams::Stream::open(s.addr, &path, None)
}

/// Reads `n` events from a subscription stream: (data_op, data).
fn read_changes(stream: &crate::streams::Stream, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = stream
            .next_batch(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("only {} of {n} changes came: {out:?}", out.len()));
        for e in crate::streams::events(&batch) {
            out.push((
                e["data_op"].as_str().unwrap().to_string(),
                e["data"].clone(),
            ));
        }
    }
    out
}

#[test]
fn a_view_publishes_its_changes_as_a_data_event_type_anyone_can_subscribe_to() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    let v1 = r#"CREATE VIEW listing AS
        SELECT p.sku, p.name, pr.amount AS price
        FROM "shop.product" p JOIN "shop.price" pr ON pr.sku = p.sku"#;
    let r = s.post("/views", &json!({"sql": v1, "publish_as": "shop.listing"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let et = s.get("/event-types/shop.listing").json();
    assert_eq!(et["category"], "data");
    assert_eq!(et["cleanup_policy"], "compact");
    assert_eq!(et["partition_key_fields"], json!(["sku"]));
    let stream = subscribe(
        &s,
        "search",
        "shop.listing",
        "batch_flush_timeout=1&batch_limit=1",
    );
    assert_eq!(stream.status, 200);

    // One step at a time: changes applied in one batch reach subscribers as their
    // net effect (the view moves from one consistent state to the next).
    for (et, op, data) in [
        (
            "shop.product",
            "C",
            json!({"sku": "a", "name": "Boot", "brand": "x"}),
        ),
        ("shop.price", "C", json!({"sku": "a", "amount": 10})),
        ("shop.price", "U", json!({"sku": "a", "amount": 12})),
        ("shop.product", "D", json!({"sku": "a"})),
    ] {
        change(&s, et, op, data);
        row_after(&s, "listing", "a");
    }
    let got = read_changes(&stream, 3);
    assert_eq!(
        got,
        [
            (
                "C".to_string(),
                json!({"sku": "a", "name": "Boot", "price": 10})
            ),
            (
                "U".to_string(),
                json!({"sku": "a", "name": "Boot", "price": 12})
            ),
            (
                "D".to_string(),
                json!({"sku": "a", "name": "Boot", "price": 12})
            ),
        ]
    );

    // A new version: subscribers get the difference once, then its changes.
    change(
        &s,
        "shop.product",
        "C",
        json!({"sku": "b", "name": "Hat", "brand": "x"}),
    );
    change(&s, "shop.price", "C", json!({"sku": "b", "amount": 5}));
    change(
        &s,
        "shop.product",
        "C",
        json!({"sku": "c", "name": "Cap", "brand": "x"}),
    );
    change(&s, "shop.price", "C", json!({"sku": "c", "amount": 0}));
    row_after(&s, "listing", "c");
    let mut created = read_changes(&stream, 2);
    created.sort_by_key(|(_, d)| d["sku"].to_string());
    assert_eq!(
        created[0],
        (
            "C".to_string(),
            json!({"sku": "b", "name": "Hat", "price": 5})
        )
    );
    assert_eq!(
        created[1],
        (
            "C".to_string(),
            json!({"sku": "c", "name": "Cap", "price": 0})
        )
    );
    let v2 = r#"CREATE VIEW listing AS
        SELECT p.sku, p.name, pr.amount AS price
        FROM "shop.product" p JOIN "shop.price" pr ON pr.sku = p.sku WHERE pr.amount > 0"#;
    let r = s.put(
        "/views/listing",
        &json!({"sql": v2, "publish_as": "shop.listing"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        read_changes(&stream, 1),
        [(
            "D".to_string(),
            json!({"sku": "c", "name": "Cap", "price": 0})
        )],
        "only what differs between the versions"
    );
    change(&s, "shop.price", "U", json!({"sku": "c", "amount": 3}));
    assert_eq!(
        read_changes(&stream, 1),
        [(
            "C".to_string(),
            json!({"sku": "c", "name": "Cap", "price": 3})
        )]
    );
    assert!(
        stream.next_batch(Duration::from_millis(300)).is_none(),
        "nothing twice"
    );
    let status = s.get("/views/listing").json();
    assert_eq!(status["publish_as"], "shop.listing");
    assert_eq!(
        status["published"], 2,
        "the switch and one change: {status}"
    );

    // Another view reads this one (through the event type it publishes to).
    let cheap =
        json!({"sql": "CREATE VIEW cheap AS SELECT sku, price FROM listing WHERE price < 10"});
    let r = s.post("/views", &cheap);
    assert_eq!(r.status, 201, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get("/views/cheap/rows/c").status != 200 {
        assert!(Instant::now() < deadline, "{}", s.get("/views/cheap").body);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        s.get("/views/cheap/rows/c").json(),
        json!({"sku": "c", "price": 3})
    );
    assert_eq!(
        s.get("/views/cheap/rows/b").json(),
        json!({"sku": "b", "price": 5})
    );
    let private = json!({"sql": "CREATE VIEW p AS SELECT sku FROM \"shop.product\""});
    assert_eq!(s.post("/views", &private).status, 201);
    let reader = json!({"sql": "CREATE VIEW r AS SELECT sku FROM p"});
    assert!(
        s.post("/views", &reader)
            .problem(422)
            .contains("give it publish_as")
    );

    // A key not selected cannot be published.
    let bad =
        json!({"sql": "CREATE VIEW q AS SELECT qty FROM \"shop.stock\"", "publish_as": "shop.q"});
    assert!(
        s.post("/views", &bad)
            .problem(422)
            .contains("select its key column")
    );
}

#[test]
fn a_view_that_starts_publishing_when_replaced_publishes_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    let sql = "CREATE VIEW names AS SELECT sku, name FROM \"shop.product\"";
    assert_eq!(s.post("/views", &json!({"sql": sql})).status, 201);
    for sku in ["a", "b"] {
        change(
            &s,
            "shop.product",
            "C",
            json!({"sku": sku, "name": sku, "brand": "x"}),
        );
    }
    row_after(&s, "names", "b");
    let r = s.put(
        "/views/names",
        &json!({"sql": sql, "publish_as": "shop.names"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let stream = subscribe(&s, "x", "shop.names", "batch_flush_timeout=1");
    let mut got = read_changes(&stream, 2);
    got.sort_by_key(|(_, d)| d["sku"].to_string());
    assert_eq!(got[0], ("C".to_string(), json!({"sku": "a", "name": "a"})));
    assert_eq!(got[1], ("C".to_string(), json!({"sku": "b", "name": "b"})));
}

#[test]
fn a_view_built_from_history_publishes_each_row_once_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    shop(&s);
    // History in the worst order for the view: each product before its price and
    // stock, and every price changed after. Read in that order, each key would go
    // through a padded row, a row per stock row and one per price.
    let skus: Vec<String> = (0..12).map(|i| format!("k{i:02}")).collect();
    for sku in &skus {
        let product = json!({"sku": sku, "name": "Boot", "brand": "x"});
        change(&s, "shop.product", "C", product);
        change(&s, "shop.price", "C", json!({"sku": sku, "amount": 10}));
        for (location, qty) in [("berlin", 2), ("hamburg", 3)] {
            let stock = json!({"sku": sku, "location": location, "qty": qty});
            change(&s, "shop.stock", "C", stock);
        }
    }
    for sku in &skus {
        change(&s, "shop.price", "U", json!({"sku": sku, "amount": 12}));
    }
    let r = s.post(
        "/views",
        &json!({"sql": LISTING, "publish_as": "shop.listing"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let stream = subscribe(
        &s,
        "x",
        "shop.listing",
        "batch_flush_timeout=1&max_uncommitted_events=100",
    );
    let mut got = read_changes(&stream, skus.len());
    got.sort_by_key(|(_, d)| d["sku"].to_string());
    let complete = |sku: &str| {
        let row = json!({"sku": sku, "name": "Boot", "brand": "X", "price": 12, "stock": 5});
        ("C".to_string(), row)
    };
    let want: Vec<_> = skus.iter().map(|sku| complete(sku)).collect();
    assert_eq!(got, want);
    row_after(&s, "product_listing", "k00");
    assert!(
        stream.next_batch(Duration::from_millis(1500)).is_none(),
        "no key's row came twice"
    );
    let status = s.get("/views/product_listing").json();
    assert_eq!(status["published"], skus.len(), "{status}");
    let order = ["shop.stock", "shop.price", "shop.product"];
    assert_eq!(
        status["catch_up"],
        json!({"order": order, "waiting": []}),
        "{status}"
    );
}
