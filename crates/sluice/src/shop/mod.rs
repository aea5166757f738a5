//! The shop: a simulated e-commerce domain that publishes through the ordinary HTTP
//! API. Its event types (real JSON Schemas, hash-partitioned by key), its views, and a
//! workload generator deterministic from a seed (`generate.rs`): a catalog with
//! attributes and images, offers by several sellers per product, price changes,
//! stock adjustments in warehouses and stores, orders and their shipments (some
//! late), reviews. `driver.rs` publishes what it generates at a rate.

pub mod driver;
mod generate;

pub use generate::{Event, Shop};

use serde_json::{Value, json};

/// The shop's event types, in the order `Event::kind` indexes them.
pub const EVENT_TYPES: [&str; 6] = [
    "shop.product",
    "shop.offer",
    "shop.stock",
    "shop.order",
    "shop.shipment",
    "shop.review",
];

/// Index of each event type in `EVENT_TYPES`.
pub const PRODUCT: usize = 0;
pub const OFFER: usize = 1;
pub const STOCK: usize = 2;
pub const ORDER: usize = 3;
pub const SHIPMENT: usize = 4;
pub const REVIEW: usize = 5;

/// The enriched product: the product, its best offer's price and how many offers it
/// has, and the stock available over all locations. A product is listed only once it
/// has an offer (inner join); stock may be missing (0).
pub const PRODUCT_LISTING: &str = r#"CREATE VIEW product_listing AS
SELECT p.sku, p.title, p.brand, p.category, p.attributes.color AS color,
       o.best_price, o.offers, COALESCE(s.available, 0) AS available,
       COALESCE(s.available, 0) > 0 AS in_stock
FROM "shop.product" p
JOIN (SELECT sku, MIN(price.amount) AS best_price, COUNT(*) AS offers
      FROM "shop.offer" GROUP BY sku) o ON o.sku = p.sku
LEFT JOIN (SELECT sku, SUM(qty) AS available FROM "shop.stock" GROUP BY sku) s
  ON s.sku = p.sku"#;

/// The shop's views by name: the enriched product, stock per sku, orders per minute.
pub const VIEWS: [(&str, &str); 3] = [
    ("product_listing", PRODUCT_LISTING),
    (
        "stock_per_sku",
        r#"CREATE VIEW stock_per_sku AS
SELECT sku, SUM(qty) AS available, COUNT(*) AS locations,
       SUM(CASE WHEN location_type = 'store' THEN qty ELSE 0 END) AS in_stores
FROM "shop.stock" GROUP BY sku"#,
    ),
    (
        "orders_per_minute",
        r#"CREATE VIEW orders_per_minute AS
SELECT SUBSTRING(metadata.occurred_at, 1, 16) AS minute, COUNT(*) AS orders,
       SUM(total.amount) AS revenue_cents
FROM STREAM("shop.order") GROUP BY SUBSTRING(metadata.occurred_at, 1, 16)"#,
    ),
];

fn money() -> Value {
    json!({
        "type": "object", "required": ["amount", "currency"],
        "properties": {
            "amount": {"type": "integer", "minimum": 0, "description": "in cents"},
            "currency": {"type": "string", "enum": ["EUR"]}
        }
    })
}

fn text() -> Value {
    json!({"type": "string", "minLength": 1})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// The user schema of each event type (the `data` object for the data types).
fn schema(kind: usize) -> Value {
    let sku = json!({"type": "string", "pattern": "^SKU-[0-9]{6,}$"});
    match kind {
        PRODUCT => json!({
            "type": "object", "required": ["sku", "title", "brand", "category"],
            "properties": {
                "sku": sku, "title": text(), "brand": text(), "category": text(),
                "description": {"type": "string"},
                "attributes": {"type": "object", "properties": {
                    "color": text(), "size": text(), "material": text()
                }},
                "images": {"type": "array", "items": {"type": "string", "format": "uri"}}
            }
        }),
        OFFER => json!({
            "type": "object", "required": ["offer_id", "sku", "seller", "price"],
            "properties": {
                "offer_id": text(), "sku": sku, "seller": text(), "price": money(),
                "condition": {"type": "string", "enum": ["new", "refurbished"]},
                "dispatch_days": {"type": "integer", "minimum": 0}
            }
        }),
        STOCK => json!({
            "type": "object", "required": ["sku", "location", "location_type", "qty"],
            "properties": {
                "sku": sku, "location": text(),
                "location_type": {"type": "string", "enum": ["warehouse", "store"]},
                "qty": {"type": "integer", "minimum": 0}
            }
        }),
        ORDER => json!({
            "type": "object",
            "required": ["order_id", "customer_id", "lines", "total", "promised_delivery_at"],
            "properties": {
                "order_id": text(), "customer_id": text(),
                "lines": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["sku", "offer_id", "qty", "unit_price"],
                    "properties": {
                        "sku": sku, "offer_id": text(), "seller": text(),
                        "qty": {"type": "integer", "minimum": 1}, "unit_price": money()
                    }
                }},
                "total": money(),
                "promised_delivery_at": time(),
                "ship_to": {"type": "object", "properties": {"country": text(), "city": text()}}
            }
        }),
        SHIPMENT => json!({
            "type": "object",
            "required": ["shipment_id", "order_id", "status", "carrier", "promised_delivery_at"],
            "properties": {
                "shipment_id": text(), "order_id": text(),
                "status": {"type": "string", "enum": ["shipped", "delivered"]},
                "carrier": text(), "promised_delivery_at": time(),
                "shipped_at": time(), "delivered_at": time()
            }
        }),
        _ => json!({
            "type": "object", "required": ["review_id", "sku", "customer_id", "rating"],
            "properties": {
                "review_id": text(), "sku": sku, "customer_id": text(),
                "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                "title": {"type": "string"}, "body": {"type": "string"}
            }
        }),
    }
}

/// The shop's event types as `POST /event-types` bodies.
pub fn event_types() -> Vec<Value> {
    let keys: [&[&str]; 6] = [
        &["sku"],
        &["offer_id"],
        &["sku", "location"],
        &["order_id"],
        &["order_id"],
        &["review_id"],
    ];
    EVENT_TYPES
        .iter()
        .enumerate()
        .map(|(kind, name)| {
            let data = kind <= STOCK;
            json!({
                "name": name,
                "owning_application": "shop-simulator",
                "category": if data { "data" } else { "business" },
                "enrichment_strategies": ["metadata_enrichment"],
                "partition_strategy": "hash",
                "partition_key_fields": keys[kind],
                "partition_count": if kind <= ORDER { 4 } else { 2 },
                "compatibility_mode": "forward",
                "schema": {"type": "json_schema", "schema": schema(kind).to_string()}
            })
        })
        .collect()
}
