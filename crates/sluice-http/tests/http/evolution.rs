//! Schema evolution through the API: versions, the three compatibility modes, the
//! schema endpoints and the compatibility check.

use serde_json::{Value, json};

use crate::{Server, price_changed, price_event, stored_events};

fn schema_of(s: &Server, name: &str) -> Value {
    let et = s.get(&format!("/event-types/{name}")).json();
    serde_json::from_str(et["schema"]["schema"].as_str().unwrap()).unwrap()
}

fn with_schema(s: &Server, name: &str, schema: &Value) -> Value {
    let mut et = s.get(&format!("/event-types/{name}")).json();
    et["schema"]["schema"] = json!(schema.to_string());
    et
}

#[test]
fn forward_mode_bumps_versions_and_refuses_breaking_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &price_changed("shop.price", 1));

    let mut schema = schema_of(&s, "shop.price");
    schema["description"] = json!("a price change");
    let r = s.put(
        "/event-types/shop.price",
        &with_schema(&s, "shop.price", &schema),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["schema"]["version"], "1.0.1", "text only: patch");

    schema["properties"]["channel"] = json!({"type": "string"});
    schema["required"] = json!(["sku", "price", "channel"]);
    let r = s.put(
        "/event-types/shop.price",
        &with_schema(&s, "shop.price", &schema),
    );
    assert_eq!(
        r.json()["schema"]["version"],
        "1.1.0",
        "a new required field is minor under forward"
    );

    let mut broken = schema.clone();
    broken["properties"].as_object_mut().unwrap().remove("seq");
    broken["properties"]["sku"]["type"] = json!("integer");
    let detail = s
        .put(
            "/event-types/shop.price",
            &with_schema(&s, "shop.price", &broken),
        )
        .problem(422);
    assert!(
        detail.contains("PROPERTY_REMOVED at #/properties/seq"),
        "{detail}"
    );
    assert!(
        detail.contains("TYPE_CHANGED at #/properties/sku"),
        "{detail}"
    );
    assert_eq!(
        s.get("/event-types/shop.price").json()["schema"]["version"],
        "1.1.0",
        "unchanged"
    );

    let versions = s.get("/event-types/shop.price/schemas").json();
    let listed: Vec<&str> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["1.1.0", "1.0.1", "1.0.0"], "newest first");
    let page = s
        .get("/event-types/shop.price/schemas?limit=1&offset=1")
        .json();
    assert_eq!(page["items"][0]["version"], "1.0.1");
    assert!(
        page["_links"]["next"]["href"].is_string() && page["_links"]["prev"]["href"].is_string()
    );
    let old = s.get("/event-types/shop.price/schemas/1.0.0").json();
    assert!(!old["schema"].as_str().unwrap().contains("channel"));

    let mut event = price_event("sku-1", 1);
    event["channel"] = json!("web");
    assert_eq!(
        s.post("/event-types/shop.price/events", &json!([event]))
            .status,
        200
    );
    s.stop();
    let stored = stored_events(dir.path(), "shop.price");
    assert_eq!(stored[0][0]["metadata"]["version"], "1.1.0");
    let s = Server::start(dir.path());
    assert_eq!(
        s.get("/event-types/shop.price/schemas").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn compatible_mode_is_closed_and_only_grows_optionally() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut et = price_changed("shop.price", 1);
    et["compatibility_mode"] = json!("compatible");
    assert_eq!(s.post("/event-types", &et).status, 201);
    let mut extra = price_event("sku-1", 1);
    extra["unknown"] = json!(1);
    assert_eq!(
        s.post("/event-types/shop.price/events", &json!([extra]))
            .status,
        422,
        "closed"
    );

    let mut schema = schema_of(&s, "shop.price");
    schema["properties"]["channel"] = json!({"type": "string"});
    let r = s.put(
        "/event-types/shop.price",
        &with_schema(&s, "shop.price", &schema),
    );
    assert_eq!(r.json()["schema"]["version"], "1.1.0");
    schema["required"] = json!(["sku", "price", "channel"]);
    let detail = s
        .put(
            "/event-types/shop.price",
            &with_schema(&s, "shop.price", &schema),
        )
        .problem(422);
    assert!(detail.contains("REQUIRED_ARRAY_EXTENDED"), "{detail}");

    let mut loose = schema_of(&s, "shop.price");
    loose["additionalProperties"] = json!(true);
    let detail = s
        .put(
            "/event-types/shop.price",
            &with_schema(&s, "shop.price", &loose),
        )
        .problem(422);
    assert!(detail.contains("additionalProperties"), "{detail}");

    let mut relaxed = s.get("/event-types/shop.price").json();
    relaxed["compatibility_mode"] = json!("forward");
    let detail = s.put("/event-types/shop.price", &relaxed).problem(422);
    assert!(detail.contains("stricter"), "{detail}");
}

#[test]
fn none_mode_takes_anything_as_a_major_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut et = price_changed("shop.price", 1);
    et["compatibility_mode"] = json!("none");
    s.post("/event-types", &et);
    let schema =
        json!({"type": "object", "properties": {"sku": {"type": "integer"}}, "required": ["sku"]});
    let mut et = with_schema(&s, "shop.price", &schema);
    et["partition_key_fields"] = json!(["sku"]);
    let r = s.put("/event-types/shop.price", &et);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["schema"]["version"], "2.0.0");
    let mut stricter = s.get("/event-types/shop.price").json();
    stricter["compatibility_mode"] = json!("forward");
    assert_eq!(s.put("/event-types/shop.price", &stricter).status, 200);
}

#[test]
fn schema_endpoints_add_fetch_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.post("/event-types", &price_changed("shop.price", 1));
    let mut schema = schema_of(&s, "shop.price");
    let original = schema.to_string();
    schema["properties"]["note"] = json!({"type": "string"});
    let body = json!({"type": "json_schema", "schema": schema.to_string()});

    let check = s
        .post(
            "/event-types/shop.price/schemas/latest/compatibility-check",
            &body,
        )
        .json();
    assert_eq!(check["is_compatible"], true);
    assert_eq!(check["version"], "1.1.0");
    assert_eq!(check["compatibility_mode"], "forward");
    let mut broken = schema.clone();
    broken["properties"]
        .as_object_mut()
        .unwrap()
        .remove("price");
    let check = s
        .post(
            "/event-types/shop.price/schemas/1.0.0/compatibility-check",
            &json!({"type": "json_schema", "schema": broken.to_string()}),
        )
        .json();
    assert_eq!(check["is_compatible"], false);
    assert!(
        check["reason"]
            .as_str()
            .unwrap()
            .contains("PROPERTY_REMOVED"),
        "{check}"
    );
    s.post(
        "/event-types/shop.price/schemas/9.9.9/compatibility-check",
        &body,
    )
    .problem(404);

    let added = s.post("/event-types/shop.price/schemas", &body);
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(added.json()["version"], "1.1.0");
    let fetched = s.post(
        "/event-types/shop.price/schemas?fetch=true",
        &json!({"type": "json_schema", "schema": original}),
    );
    assert_eq!(
        fetched.json()["version"],
        "1.0.0",
        "fetch returns the existing version"
    );
    assert_eq!(
        s.get("/event-types/shop.price").json()["schema"]["version"],
        "1.1.0",
        "and changes nothing"
    );
    s.post(
        "/event-types/shop.price/schemas",
        &json!({"type": "json_schema", "schema": "{\"type\": 1}"}),
    )
    .problem(422);
}
