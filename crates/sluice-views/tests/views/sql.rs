//! What the SQL subset compiles to, and how what it lacks is refused.

use serde_json::json;
use sluice_views::{SourceKind, compile, plan::Column};

use crate::Shop;

fn error(sql: &str) -> (String, u64, u64) {
    let e = compile(sql, &Shop).unwrap_err();
    (e.message, e.line, e.column)
}

#[test]
fn keys_are_derived_from_sources_joins_and_groups() {
    let key_names = |sql: &str| {
        let p = compile(sql, &Shop).unwrap();
        p.key
            .iter()
            .map(|k| p.columns[*k].name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        key_names(r#"CREATE VIEW v AS SELECT sku, amount FROM "shop.price""#),
        ["sku"]
    );
    // Joined on the right side's whole key: the left's key stays the key.
    assert_eq!(
        key_names(
            r#"CREATE VIEW v AS SELECT o.offer_id, p.name FROM "shop.offer" o JOIN "shop.product" p ON o.product_sku = p.sku"#
        ),
        ["offer_id"]
    );
    assert_eq!(
        key_names(r#"CREATE VIEW v AS SELECT sku, SUM(qty) AS qty FROM "shop.stock" GROUP BY sku"#),
        ["sku"]
    );
    // A key column not selected is kept, hidden.
    let p = compile(r#"CREATE VIEW v AS SELECT qty FROM "shop.stock""#, &Shop).unwrap();
    let hidden: Vec<&Column> = p.columns.iter().filter(|c| c.hidden).collect();
    assert_eq!(hidden.len(), 2, "{:?}", p.columns);
    assert_eq!(
        key_names(
            r#"CREATE VIEW v WITH (key = 'order_id') AS SELECT order_id, sku FROM "shop.order""#
        ),
        ["order_id"]
    );
}

#[test]
fn stream_reads_a_keyed_business_event_type_as_a_stream() {
    let kind = |sql: &str| compile(sql, &Shop).unwrap().scans[0].info.kind.clone();
    assert!(matches!(
        kind(r#"CREATE VIEW v AS SELECT review_id, sku FROM "shop.review""#),
        SourceKind::Table { .. }
    ));
    assert_eq!(
        kind(
            r#"CREATE VIEW v AS SELECT sku, COUNT(*) AS n FROM STREAM("shop.review") GROUP BY sku"#
        ),
        SourceKind::Stream
    );
    assert_eq!(
        kind(
            r#"CREATE VIEW v AS SELECT r.sku, COUNT(*) AS n FROM stream("shop.review") r GROUP BY r.sku"#
        ),
        SourceKind::Stream
    );
    // A stream has no key: without GROUP BY the view must declare one.
    let e = compile(
        r#"CREATE VIEW v AS SELECT review_id, sku FROM STREAM("shop.review")"#,
        &Shop,
    )
    .unwrap_err();
    assert!(e.message.contains("declare it"), "{}", e.message);
}

#[test]
fn rows_are_json_with_star_spread_and_hidden_columns_left_out() {
    let p = compile(
        r#"CREATE VIEW v AS SELECT *, 1 AS one FROM "shop.product""#,
        &Shop,
    )
    .unwrap();
    let row: Vec<sluice_views::Datum> = p
        .columns
        .iter()
        .map(|c| match c.name.as_str() {
            "one" => sluice_views::Datum::Int(1),
            _ if c.spread => sluice_views::Datum::from_json(&json!({"sku": "s1", "name": "n"})),
            _ => sluice_views::Datum::str("s1"),
        })
        .collect();
    assert_eq!(
        p.row_json(&row),
        json!({"sku": "s1", "name": "n", "one": 1})
    );
}

#[test]
fn what_the_subset_lacks_is_refused_with_its_position() {
    let cases: &[(&str, &str, u64, u64)] = &[
        (
            "CREATE VIEW v AS SELEC sku FROM x",
            "SQL does not parse",
            1,
            18,
        ),
        ("SELECT 1", "a statement other than CREATE VIEW", 1, 1),
        (
            "CREATE VIEW v AS SELECT sku FROM \"shop.nothing\"",
            "event type `shop.nothing` does not exist",
            1,
            34,
        ),
        (
            "CREATE VIEW v AS SELECT sku FROM STREAM(\"shop.product\")",
            "`shop.product` holds data change events: it is read as a table",
            1,
            34,
        ),
        (
            "CREATE VIEW v AS SELECT sku FROM STREAM(\"shop.review\", \"shop.order\")",
            "STREAM takes one event type's name",
            1,
            34,
        ),
        (
            "CREATE VIEW v AS SELECT sku FROM LATEST(\"shop.review\")",
            "a table function other than STREAM(event_type)",
            1,
            34,
        ),
        (
            "CREATE VIEW v AS SELECT sku FROM STREAM(\"shop.nothing\") s",
            "event type `shop.nothing` does not exist",
            1,
            34,
        ),
        (
            "CREATE VIEW v AS\nSELECT p.sku FROM \"shop.product\" p\nFULL JOIN \"shop.price\" q ON q.sku = p.sku",
            "this join (INNER and LEFT joins are)",
            3,
            11,
        ),
        (
            "CREATE VIEW v AS SELECT sku FROM \"shop.product\" ORDER BY sku",
            "ORDER BY / LIMIT are not supported",
            1,
            18,
        ),
        (
            "CREATE VIEW v AS SELECT sku, name FROM \"shop.product\" GROUP BY sku",
            "`name` must appear in GROUP BY",
            1,
            30,
        ),
        (
            "CREATE VIEW v AS SELECT sku || 'x' FROM \"shop.product\"",
            "name the expression",
            1,
            25,
        ),
        (
            "CREATE VIEW v AS SELECT sku, 'a' + 1 AS x FROM \"shop.product\"",
            "type mismatch",
            1,
            30,
        ),
        (
            "CREATE VIEW v AS SELECT p.sku FROM \"shop.product\" p JOIN \"shop.price\" q ON q.amount > 1",
            "at least one equality",
            1,
            76,
        ),
        (
            "CREATE VIEW v AS SELECT sku FROM \"shop.product\" p JOIN \"shop.price\" q ON q.sku = p.sku",
            "`sku` is ambiguous",
            1,
            25,
        ),
        (
            "CREATE VIEW v AS SELECT order_id FROM \"shop.order\"",
            "declare it with CREATE VIEW name WITH (key",
            1,
            13,
        ),
        (
            "CREATE VIEW v AS SELECT sku, frobnicate(sku) AS f FROM \"shop.product\"",
            "unknown function frobnicate",
            1,
            30,
        ),
        (
            "CREATE VIEW v AS SELECT sku FROM \"shop.product\" UNION SELECT sku FROM \"shop.price\"",
            "UNION",
            1,
            18,
        ),
        (
            "CREATE VIEW v AS SELECT sku, COUNT(DISTINCT sku) AS n FROM \"shop.product\" GROUP BY sku",
            "DISTINCT / ALL in an aggregate",
            1,
            30,
        ),
    ];
    let mut wrong = Vec::new();
    for (sql, want, line, column) in cases {
        let (message, l, c) = error(sql);
        if !message.contains(want) || (l, c) != (*line, *column) {
            wrong.push(format!("{sql}\n  -> {message} at ({l}, {c})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_view_catches_up_one_source_after_the_other_right_sides_first() {
    let ranks = |sql: &str| {
        let p = compile(sql, &Shop).unwrap();
        p.catch_up_ranks().into_iter().collect::<Vec<_>>()
    };
    let r = |t: &str, n: usize| (t.to_string(), n);
    // The LEFT JOIN's null-supplying side (stock) first, the side that completes each
    // row (the product) last.
    assert_eq!(
        ranks(
            r#"CREATE VIEW v AS SELECT p.sku, pr.amount, s.qty FROM "shop.product" p
               JOIN "shop.price" pr ON pr.sku = p.sku
               LEFT JOIN (SELECT sku, SUM(qty) AS qty FROM "shop.stock" GROUP BY sku) s ON s.sku = p.sku"#
        ),
        [r("shop.price", 1), r("shop.product", 2), r("shop.stock", 0)]
    );
    // A type read twice is read once, at its first place.
    assert_eq!(
        ranks(
            r#"CREATE VIEW v AS SELECT a.sku, b.amount FROM "shop.price" a
               JOIN "shop.price" b ON b.sku = a.sku"#
        ),
        [r("shop.price", 0)]
    );
}
