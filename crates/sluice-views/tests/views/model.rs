//! Model-based: random upserts and deletes on the shop's sources, applied in random
//! batches to each view; after every batch the view must equal the same SQL evaluated
//! from scratch over the sources as they are then.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sluice_views::frozen::Frozen;
use sluice_views::source::{Change, change};
use sluice_views::{Datum, OnError, Row, View, compile, naive, snapshot};

use crate::{Shop, Tables, data};

const VIEWS: &[&str] = &[
    // The enriched product: complete only with a price; stock summed over locations.
    r#"CREATE VIEW product_listing AS
       SELECT p.sku, p.name, UPPER(p.brand) AS brand, pr.amount AS price, s.qty AS stock,
              COALESCE(s.qty, 0) > 0 AS available
       FROM "shop.product" p
       JOIN "shop.price" pr ON pr.sku = p.sku
       LEFT JOIN (SELECT sku, SUM(qty) AS qty FROM "shop.stock" GROUP BY sku) s ON s.sku = p.sku
       WHERE pr.amount > 0"#,
    // The same without a filter, the stock joined on the price's sku: the left side of
    // the second join is looked up in the product and price tables, not indexed.
    r#"CREATE VIEW listing_by_price AS
       SELECT p.sku, p.name, pr.amount AS price, COALESCE(s.qty, 0) AS stock
       FROM "shop.product" p
       JOIN "shop.price" pr ON pr.sku = p.sku
       LEFT JOIN (SELECT sku, SUM(qty) AS qty FROM "shop.stock" GROUP BY sku) s ON s.sku = pr.sku"#,
    r#"CREATE VIEW stock AS
       SELECT sku, SUM(qty) AS qty, COUNT(*) AS locations, COUNT(qty) AS counted,
              MIN(qty) AS least, MAX(qty) AS most, AVG(qty) AS mean
       FROM "shop.stock" GROUP BY sku"#,
    // A foreign-key join: many offers per product.
    r#"CREATE VIEW offers AS
       SELECT o.offer_id, o.seller, o.amount * 2 AS doubled, p.name, p.brand
       FROM "shop.offer" o JOIN "shop.product" p ON o.product_sku = p.sku"#,
    r#"CREATE VIEW offers_left AS
       SELECT o.offer_id, p.name FROM "shop.offer" o LEFT JOIN "shop.product" p ON o.product_sku = p.sku"#,
    r#"CREATE VIEW best_offer AS
       SELECT product_sku AS sku, MIN(amount) AS best, MAX(amount) AS worst, COUNT(*) AS offers
       FROM "shop.offer" GROUP BY product_sku"#,
    r#"CREATE VIEW brands AS
       SELECT p.brand, COUNT(*) AS n, SUM(s.qty) AS qty
       FROM "shop.product" p JOIN "shop.stock" s ON s.sku = p.sku
       GROUP BY p.brand HAVING COUNT(*) > 1"#,
    r#"CREATE VIEW totals AS SELECT COUNT(*) AS n, SUM(qty) AS total FROM "shop.stock""#,
    r#"CREATE VIEW stock_status AS
       SELECT sku, CASE WHEN qty > 10 THEN 'plenty' WHEN qty > 0 THEN 'low' ELSE 'out' END AS status,
              COALESCE(location, 'none') AS loc
       FROM "shop.stock" WHERE location <> 'closed' OR qty IS NULL"#,
    r#"CREATE VIEW orders AS
       SELECT sku, COUNT(*) AS orders, SUM(quantity) AS units FROM "shop.order" GROUP BY sku"#,
    // Aggregates joined on their group value, looked up in their groups: on the left
    // of an inner join, under HAVING on the right of a left join, and grouped by a
    // number (a whole double joins as the integer: an offer at 6 matches the groups
    // of 6 and of 6.0, summed per offer).
    r#"CREATE VIEW stock_first AS
       SELECT s.sku, s.qty, p.name
       FROM (SELECT sku, SUM(qty) AS qty FROM "shop.stock" GROUP BY sku) s
       JOIN "shop.product" p ON p.sku = s.sku"#,
    r#"CREATE VIEW stocked_products AS
       SELECT p.sku, p.name, s.places
       FROM "shop.product" p
       LEFT JOIN (SELECT COUNT(*) AS places, sku FROM "shop.stock" GROUP BY sku
                  HAVING SUM(qty) > 5) s ON s.sku = p.sku"#,
    r#"CREATE VIEW offers_at_price AS
       SELECT o.offer_id, SUM(pr.products) AS products, COUNT(*) AS groups
       FROM "shop.offer" o
       LEFT JOIN (SELECT amount, COUNT(*) AS products FROM "shop.price" GROUP BY amount) pr
         ON pr.amount = o.amount
       GROUP BY o.offer_id"#,
    // Three sources and an aggregate over the join, grouped by a computed value.
    r#"CREATE VIEW price_bands AS
       SELECT CASE WHEN pr.amount >= 10 THEN 'high' ELSE 'low' END AS band,
              COUNT(*) AS products, SUM(s.qty) AS units, MAX(o.amount) AS top_offer
       FROM "shop.product" p
       JOIN "shop.price" pr ON pr.sku = p.sku
       JOIN "shop.stock" s ON s.sku = p.sku
       LEFT JOIN "shop.offer" o ON o.product_sku = p.sku
       GROUP BY CASE WHEN pr.amount >= 10 THEN 'high' ELSE 'low' END"#,
];

fn pick<'a>(rng: &mut fastrand::Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.usize(..xs.len())]
}

/// A number the engine and the model sum exactly: an integer, a quarter, or null.
fn amount(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..10) {
        0 => Value::Null,
        1 | 2 => json!(f64::from(rng.i32(-8..80)) / 4.0),
        _ => json!(rng.i64(-3..30)),
    }
}

/// One random change to one of the shop's sources.
fn event(rng: &mut fastrand::Rng) -> (&'static str, Value) {
    let sku = pick(rng, &["s1", "s2", "s3", "s4", "s5"]);
    let op = if rng.u8(..4) == 0 {
        "D"
    } else {
        pick(rng, &["C", "U"])
    };
    match rng.u8(..5) {
        0 => (
            "shop.product",
            data(
                op,
                json!({"sku": sku, "name": format!("{sku}-{}", rng.u8(..3)),
                            "brand": pick(rng, &["acme", "Zeta", "acme"])}),
            ),
        ),
        1 => (
            "shop.price",
            data(op, json!({"sku": sku, "amount": amount(rng)})),
        ),
        2 => (
            "shop.stock",
            data(
                op,
                json!({"sku": sku, "location": pick(rng, &["berlin", "paris", "closed"]),
                            "qty": amount(rng)}),
            ),
        ),
        3 => {
            let product = if rng.u8(..6) == 0 {
                Value::Null
            } else {
                json!(sku)
            };
            (
                "shop.offer",
                data(
                    op,
                    json!({"offer_id": format!("o{}", rng.u8(..8)), "product_sku": product,
                                "seller": pick(rng, &["a", "b"]), "amount": amount(rng)}),
                ),
            )
        }
        _ => (
            "shop.order",
            json!({"metadata": {"eid": "e", "occurred_at": "2026-11-23T00:00:00Z"},
                   "order_id": format!("x{}", rng.u32(..)), "sku": sku, "quantity": rng.i64(1..4)}),
        ),
    }
}

/// The view as the engine holds it; every key must hold exactly one row.
fn engine_rows(view: &View) -> BTreeMap<String, Row> {
    view.output()
        .weighted()
        .map(|(k, rows)| {
            assert_eq!(rows.len(), 1, "key {k}: {rows:?}");
            let (row, weight) = &rows[0];
            assert_eq!(*weight, 1, "key {k}: {rows:?}");
            (k.to_string(), row.clone())
        })
        .collect()
}

/// The view as it must be, from the model's tables.
fn expected(view: &View, tables: &Tables) -> BTreeMap<String, Row> {
    let plan = view.plan();
    let scans: Vec<Vec<Row>> = plan
        .scans
        .iter()
        .map(|s| {
            tables
                .rows
                .get(&s.event_type)
                .into_iter()
                .flatten()
                .map(|(_, e)| match change(s, e) {
                    Ok(Change::Upsert(r)) => r,
                    other => panic!("{other:?}"),
                })
                .collect()
        })
        .collect();
    naive::view(plan, &scans).unwrap()
}

/// Runs random batches through a view; every `restore_every` batches the view is
/// written to bytes and replaced by what they read back.
fn run(sql: &str, seed: u64, steps: usize, restore_every: Option<usize>) {
    let plan = Arc::new(compile(sql, &Shop).unwrap_or_else(|e| panic!("{sql}: {e}")));
    let mut view = View::new(plan.clone());
    let mut tables = Tables::default();
    let mut rng = fastrand::Rng::with_seed(seed);
    assert_eq!(
        engine_rows(&view),
        expected(&view, &tables),
        "{sql}: before any event"
    );
    for step in 0..steps {
        let batch: Vec<(&str, Value)> = (0..rng.usize(1..6)).map(|_| event(&mut rng)).collect();
        let refs: Vec<(&str, &Value)> = batch.iter().map(|(t, e)| (*t, e)).collect();
        let applied = view.apply(&refs, OnError::Skip);
        assert!(applied.rejected.is_empty(), "{sql}: {:?}", applied.rejected);
        for (t, e) in &batch {
            tables.apply(t, e);
        }
        if restore_every.is_some_and(|n| step % n == n - 1) {
            let offsets = [(("shop.stock".to_string(), 0), step as u64)].into();
            let bytes = snapshot::encode(&view, sql, &offsets);
            let (restored, read) = snapshot::decode(plan.clone(), sql, &bytes).unwrap();
            assert_eq!(read, offsets);
            assert_eq!(engine_rows(&restored), engine_rows(&view));
            let (loaded, read) = frozen_reads_as_the_view(&plan, sql, bytes, &engine_rows(&view));
            assert_eq!(read, offsets);
            // Every other restore goes on from the state loaded from the file.
            view = if (step / restore_every.unwrap_or(1)).is_multiple_of(2) {
                restored
            } else {
                loaded
            };
        }
        let (got, want) = (engine_rows(&view), expected(&view, &tables));
        assert_eq!(
            got, want,
            "{sql}\nseed {seed}, step {step}, batch {batch:?}"
        );
    }
}

/// The rows a state file answers while it loads are the view's, by key and by range,
/// and the state it loads has them too; returns that state and its offsets.
fn frozen_reads_as_the_view(
    plan: &Arc<sluice_views::Plan>,
    sql: &str,
    bytes: Vec<u8>,
    rows: &BTreeMap<String, Row>,
) -> (View, BTreeMap<(String, u32), u64>) {
    use std::ops::Bound;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("view.state");
    std::fs::write(&path, bytes).unwrap();
    let frozen = Frozen::open(plan.clone(), sql, &path).unwrap();
    assert_eq!(frozen.len(), rows.len());
    for (k, row) in rows {
        assert_eq!(frozen.get(k).as_ref(), Some(row), "{sql}: key {k}");
    }
    assert_eq!(frozen.get("no such key"), None);
    let all: Vec<Row> = rows.values().cloned().collect();
    assert_eq!(frozen.range(Bound::Unbounded, "", usize::MAX), all);
    let every = (rows.len() / 100).max(1);
    for (i, k) in rows.keys().enumerate().step_by(every) {
        let after: Vec<Row> = all[i + 1..].iter().take(3).cloned().collect();
        assert_eq!(frozen.range(Bound::Excluded(k), "", 3), after, "after {k}");
        let prefix = &k[..k.len().min(4)];
        let want: Vec<Row> = rows
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(
            frozen.range(Bound::Included(prefix), prefix, usize::MAX),
            want,
            "prefix {prefix}"
        );
    }
    let loaded = frozen.load().unwrap();
    assert_eq!(&engine_rows(&loaded), rows, "{sql}: loaded from the file");
    (loaded, frozen.offsets.clone())
}

#[test]
fn every_view_equals_its_recomputation_after_every_batch() {
    for sql in VIEWS {
        for seed in 0..12 {
            run(sql, seed, 250, None);
        }
    }
}

#[test]
fn a_view_restored_from_its_snapshot_goes_on_exactly_as_the_original() {
    for sql in VIEWS {
        for seed in 100..103 {
            run(sql, seed, 200, Some(17));
        }
    }
}

#[test]
fn a_large_view_reads_from_its_state_file_across_blocks() {
    // Thousands of keys (many blocks of the file's index), some deleted again: the
    // file answers as the view does.
    let sql = VIEWS[0];
    let plan = Arc::new(compile(sql, &Shop).unwrap());
    let mut view = View::new(plan.clone());
    let mut rng = fastrand::Rng::with_seed(11);
    let mut batch = Vec::new();
    for i in 0..3000 {
        let sku = format!("sku-{i:05}");
        batch.push((
            "shop.product",
            data(
                "C",
                json!({"sku": sku, "name": format!("n{i}"), "brand": "b"}),
            ),
        ));
        batch.push((
            "shop.price",
            data("C", json!({"sku": sku, "amount": 1 + rng.u32(..100)})),
        ));
        if i % 7 == 0 {
            batch.push((
                "shop.stock",
                data(
                    "C",
                    json!({"sku": sku, "location": "w", "qty": rng.u32(..9)}),
                ),
            ));
        }
        if i % 11 == 0 {
            batch.push(("shop.product", data("D", json!({"sku": sku}))));
        }
    }
    let refs: Vec<(&str, &Value)> = batch.iter().map(|(t, e)| (*t, e)).collect();
    assert!(view.apply(&refs, OnError::Skip).rejected.is_empty());
    let rows = engine_rows(&view);
    assert!(rows.len() > 2500, "{}", rows.len());
    frozen_reads_as_the_view(
        &plan,
        sql,
        snapshot::encode(&view, sql, &Default::default()),
        &rows,
    );
}

#[test]
fn a_damaged_or_foreign_snapshot_is_refused() {
    let sql = VIEWS[1];
    let plan = Arc::new(compile(sql, &Shop).unwrap());
    let mut view = View::new(plan.clone());
    let mut rng = fastrand::Rng::with_seed(7);
    let batch: Vec<(&str, Value)> = (0..50).map(|_| event(&mut rng)).collect();
    let refs: Vec<(&str, &Value)> = batch.iter().map(|(t, e)| (*t, e)).collect();
    view.apply(&refs, OnError::Skip);
    let bytes = snapshot::encode(&view, sql, &Default::default());
    for i in [0, 9, 20, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(
            snapshot::decode(plan.clone(), sql, &bad).is_err(),
            "flipped byte {i}"
        );
    }
    assert!(snapshot::decode(plan.clone(), sql, &bytes[..bytes.len() - 3]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("view.state");
    for bad in [bytes[..bytes.len() - 3].to_vec(), {
        let mut b = bytes.clone();
        b[bytes.len() / 2] ^= 0x40;
        b
    }] {
        std::fs::write(&path, bad).unwrap();
        assert!(Frozen::open(plan.clone(), sql, &path).is_err());
    }
    std::fs::write(&path, &bytes).unwrap();
    let other = Frozen::open(plan.clone(), VIEWS[0], &path).unwrap_err();
    assert!(other.0.contains("other SQL"), "{other}");
    let other = snapshot::decode(plan, VIEWS[0], &bytes).unwrap_err();
    assert!(other.0.contains("other SQL"), "{other}");
}

#[test]
fn a_view_over_an_event_that_fails_skips_it_or_stops_before_it() {
    // The same cast over a scan, and in the SELECT list of a join (made from the pair
    // of rows, with no joined row in between).
    let views = [
        r#"CREATE VIEW prices AS SELECT sku, CAST(amount AS BIGINT) + 1 AS next FROM "shop.price""#,
        r#"CREATE VIEW prices AS SELECT p.sku, CAST(pr.amount AS BIGINT) + 1 AS next
           FROM "shop.product" p JOIN "shop.price" pr ON pr.sku = p.sku"#,
    ];
    for sql in views {
        fails_on_one_event(sql);
    }
}

fn fails_on_one_event(sql: &str) {
    let plan = Arc::new(compile(sql, &Shop).unwrap());
    let products: Vec<(&str, Value)> = ["s1", "s2", "s3"]
        .iter()
        .map(|sku| ("shop.product", data("U", json!({"sku": sku, "name": sku}))))
        .collect();
    let products: Vec<(&str, &Value)> = products.iter().map(|(t, e)| (*t, e)).collect();
    let good = |sku: &str, amount: Value| data("U", json!({"sku": sku, "amount": amount}));
    let batch = [
        ("shop.price", good("s1", json!("7"))),
        ("shop.price", good("s2", json!("seven"))),
        ("shop.price", good("s3", json!(8))),
    ];
    let refs: Vec<(&str, &Value)> = batch.iter().map(|(t, e)| (*t, e)).collect();

    let mut skip = View::new(plan.clone());
    skip.apply(&products, OnError::Skip);
    let applied = skip.apply(&refs, OnError::Skip);
    assert_eq!(applied.taken, 3, "{sql}");
    assert_eq!(applied.rejected.len(), 1);
    assert_eq!(applied.rejected[0].index, 1);
    assert_eq!(
        applied.rejected[0].message,
        "cannot cast text seven to integer"
    );
    let rows = engine_rows(&skip);
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["s1", "s3"], "{sql}");
    assert_eq!(rows["s3"][1], sluice_views::Datum::Int(9));

    let mut stop = View::new(plan);
    stop.apply(&products, OnError::Stop);
    let applied = stop.apply(&refs, OnError::Stop);
    assert_eq!((applied.taken, applied.rejected.len()), (1, 1));
    assert_eq!(engine_rows(&stop).keys().collect::<Vec<_>>(), ["s1"]);
    // The skipped event changed nothing: s2 keeps no row, and a later good event lands.
    let later = [("shop.price", good("s2", json!(2)))];
    let refs: Vec<(&str, &Value)> = later.iter().map(|(t, e)| (*t, e)).collect();
    skip.apply(&refs, OnError::Skip);
    assert_eq!(
        engine_rows(&skip).keys().collect::<Vec<_>>(),
        ["s1", "s2", "s3"]
    );
}

#[test]
fn tables_joined_on_their_keys_match_numbers_by_value() {
    // Both sides are read through their source tables (joined on their whole keys);
    // a key written 2.0 on one side joins 2 on the other, as in an index of its own.
    // The second view looks the pair up in both tables by the stock's sku.
    let views = [
        r#"CREATE VIEW v AS SELECT o.offer_id, o.seller, p.name FROM "shop.offer" o JOIN "shop.product" p ON p.sku = o.offer_id"#,
        r#"CREATE VIEW v AS SELECT o.offer_id, o.seller, p.name, s.qty
           FROM "shop.offer" o JOIN "shop.product" p ON p.sku = o.offer_id
           LEFT JOIN (SELECT sku, SUM(qty) AS qty FROM "shop.stock" GROUP BY sku) s ON s.sku = p.sku"#,
    ];
    for sql in views {
        numbers_join_by_value(sql);
    }
}

fn numbers_join_by_value(sql: &str) {
    let stock = |sku: Value, qty: i64| {
        (
            "shop.stock",
            data("U", json!({"sku": sku, "location": "l", "qty": qty})),
        )
    };
    let plan = Arc::new(compile(sql, &Shop).unwrap());
    let mut view = View::new(plan.clone());
    let mut tables = Tables::default();
    let batches = [
        vec![
            (
                "shop.product",
                data("U", json!({"sku": 2.0, "name": "two"})),
            ),
            (
                "shop.offer",
                data("U", json!({"offer_id": 2, "seller": "s"})),
            ),
            (
                "shop.offer",
                data("U", json!({"offer_id": 3.5, "seller": "t"})),
            ),
            (
                "shop.product",
                data("U", json!({"sku": 3.5, "name": "three and a half"})),
            ),
        ],
        vec![(
            "shop.product",
            data("U", json!({"sku": 2.0, "name": "two again"})),
        )],
        vec![(
            "shop.offer",
            data("U", json!({"offer_id": 2, "seller": "u"})),
        )],
        // The stock of 2 finds product 2.0 (and offer 2) through the lookup.
        vec![stock(json!(2), 5), stock(json!(3.5), 1)],
        vec![stock(json!(2), 7)],
    ];
    for batch in batches {
        let refs: Vec<(&str, &Value)> = batch.iter().map(|(t, e)| (*t, e)).collect();
        assert!(view.apply(&refs, OnError::Skip).rejected.is_empty());
        for (t, e) in &batch {
            tables.apply(t, e);
        }
        assert_eq!(engine_rows(&view), expected(&view, &tables), "{batch:?}");
    }
    let rows = engine_rows(&view);
    assert_eq!(
        rows.len(),
        2,
        "offer 2 joins product 2.0, 3.5 joins 3.5: {rows:?}"
    );
    assert_eq!(rows["2"][2], sluice_views::Datum::str("two again"));
    let batch = [("shop.product", data("D", json!({"sku": 2.0})))];
    let refs: Vec<(&str, &Value)> = batch.iter().map(|(t, e)| (*t, e)).collect();
    view.apply(&refs, OnError::Skip);
    assert_eq!(engine_rows(&view).len(), 1);
}

/// A group under a LEFT JOIN that is replaced in a step changes its row by a
/// retraction and an insertion: the padded row the key would have without the group
/// does not appear and go again in between (work for nothing on every update).
#[test]
fn a_replaced_group_under_a_left_join_is_two_engine_changes() {
    let sql = r#"CREATE VIEW v AS
       SELECT p.sku, p.name, COALESCE(s.qty, 0) AS stock
       FROM "shop.product" p
       LEFT JOIN (SELECT sku, SUM(qty) AS qty FROM "shop.stock" GROUP BY sku) s ON s.sku = p.sku"#;
    let mut view = View::new(Arc::new(compile(sql, &Shop).unwrap()));
    let stock = |op: &str, location: &str, qty: i64| {
        (
            "shop.stock",
            data(op, json!({"sku": "s1", "location": location, "qty": qty})),
        )
    };
    let mut step = |events: &[(&str, Value)]| {
        let refs: Vec<(&str, &Value)> = events.iter().map(|(t, e)| (*t, e)).collect();
        let applied = view.apply(&refs, OnError::Stop);
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        (applied.changes.len(), applied.engine_changes)
    };
    let product = ("shop.product", data("C", json!({"sku": "s1", "name": "a"})));
    // The product's padded row: one insertion.
    assert_eq!(step(&[product]), (1, 1));
    // Its first stock: the padded row goes, the joined row comes.
    assert_eq!(step(&[stock("C", "berlin", 3)]), (1, 2));
    // The group replaced, by an update and by a second location.
    assert_eq!(step(&[stock("U", "berlin", 5)]), (1, 2));
    assert_eq!(step(&[stock("C", "paris", 1)]), (1, 2));
    // Replaced twice in one step: still its old row out and its new one in.
    assert_eq!(
        step(&[stock("U", "berlin", 7), stock("U", "paris", 2)]),
        (1, 2)
    );
    // Both locations gone: the joined row goes, the padded one comes back.
    assert_eq!(
        step(&[stock("D", "berlin", 0), stock("D", "paris", 0)]),
        (1, 2)
    );
    // A group that comes and goes within a step changes nothing.
    assert_eq!(
        step(&[stock("C", "berlin", 4), stock("D", "berlin", 0)]),
        (0, 0)
    );
}

#[test]
fn a_key_both_sides_of_an_inner_join_change_in_one_step_is_joined_once() {
    let sql = r#"CREATE VIEW v AS
       SELECT p.sku, p.name, pr.amount
       FROM "shop.product" p JOIN "shop.price" pr ON pr.sku = p.sku"#;
    let mut view = View::new(Arc::new(compile(sql, &Shop).unwrap()));
    let product =
        |op: &str, name: &str| ("shop.product", data(op, json!({"sku": "s1", "name": name})));
    let price = |op: &str, amount: i64| {
        (
            "shop.price",
            data(op, json!({"sku": "s1", "amount": amount})),
        )
    };
    let mut step = |events: &[(&str, Value)]| {
        let refs: Vec<(&str, &Value)> = events.iter().map(|(t, e)| (*t, e)).collect();
        let applied = view.apply(&refs, OnError::Stop);
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        let row = view.output().get("s1").map(|r| r.to_vec());
        (applied.changes.len(), applied.engine_changes, row)
    };
    let row = |name: &str, amount: i64| {
        Some(vec![Datum::str("s1"), Datum::str(name), Datum::Int(amount)])
    };
    // Both sides new in one step: one joined row, not three that sum to one.
    assert_eq!(
        step(&[product("C", "a"), price("C", 10)]),
        (1, 1, row("a", 10))
    );
    // Both replaced in one step: the old pair out, the new one in.
    assert_eq!(
        step(&[product("U", "b"), price("U", 12)]),
        (1, 2, row("b", 12))
    );
    // One side only, as before.
    assert_eq!(step(&[price("U", 13)]), (1, 2, row("b", 13)));
    // A side replaced twice and the other once: still one pair out, one in.
    assert_eq!(
        step(&[price("U", 14), product("U", "c"), price("U", 15)]),
        (1, 2, row("c", 15))
    );
    // One side gone while the other changes: the pair goes.
    assert_eq!(step(&[product("D", "c"), price("U", 16)]), (1, 1, None));
    // Both back in one step.
    assert_eq!(
        step(&[price("U", 17), product("C", "d")]),
        (1, 1, row("d", 17))
    );
}

#[test]
fn a_keyed_business_event_type_read_as_a_stream_counts_every_event_and_keeps_none() {
    fn apply(view: &mut View, ids: std::ops::Range<u32>) {
        let events: Vec<Value> = ids
            .map(|i| {
                json!({"metadata": {"eid": "e", "occurred_at": "2026-11-23T00:00:00Z"},
                       "review_id": format!("r{i}"), "sku": "s1", "rating": 5})
            })
            .collect();
        let refs: Vec<(&str, &Value)> = events.iter().map(|e| ("shop.review", e)).collect();
        let applied = view.apply(&refs, OnError::Stop);
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
    }
    let counts = |from: &str| {
        let sql = format!("CREATE VIEW v AS SELECT sku, COUNT(*) AS n FROM {from} GROUP BY sku");
        let mut view = View::new(Arc::new(compile(&sql, &Shop).unwrap()));
        // Review 0 twice (a producer sending it again under a new eid).
        apply(&mut view, 0..1);
        apply(&mut view, 0..2);
        let offsets = [(("shop.review".to_string(), 0), 0)].into();
        let before = snapshot::encode(&view, &sql, &offsets).len();
        apply(&mut view, 2..1002);
        let grown = snapshot::encode(&view, &sql, &offsets).len() - before;
        let n = view.output().get("s1").unwrap()[1].clone();
        (n, grown)
    };
    // As a table (its key is review_id): the latest review per id (1,002 ids), each
    // one kept.
    let (n, grown) = counts(r#""shop.review""#);
    assert_eq!(n, Datum::Int(1002));
    assert!(grown > 1000 * 8, "{grown} bytes for 1000 reviews");
    // As a stream: every event counted (1,003), and only the group kept.
    let (n, grown) = counts(r#"STREAM("shop.review")"#);
    assert_eq!(n, Datum::Int(1003));
    assert!(grown < 16, "{grown} bytes for 1000 reviews");
}
