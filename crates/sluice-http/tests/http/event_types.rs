//! `/event-types`, schemas, registries, health, errors.

use serde_json::json;

use crate::{Needs, Server, price_changed, storage_has};

#[test]
fn health_version_and_registries() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let r = s.get("/health");
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
    assert_eq!(s.get("/version").json()["name"], "sluice");
    let strategies = s.get("/registry/partition-strategies").json();
    assert_eq!(strategies, json!(["hash", "user_defined", "random"]));
    assert_eq!(
        s.get("/registry/enrichment-strategies").json(),
        json!(["metadata_enrichment"])
    );
    s.get("/no/such/thing").problem(404);
    s.delete("/health").problem(405);
}

#[test]
fn create_get_list_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let created = s.post("/event-types", &price_changed("shop.price_changed", 4));
    assert_eq!(created.status, 201, "{}", created.body);
    let et = created.json();
    assert_eq!(et["name"], "shop.price_changed");
    assert_eq!(et["schema"]["version"], "1.0.0");
    assert_eq!(et["partition_count"], 4);
    assert_eq!(et["compatibility_mode"], "forward");
    assert_eq!(et["cleanup_policy"], "delete");
    for field in ["created_at", "updated_at"] {
        assert!(
            et[field].as_str().is_some_and(|t| t.ends_with('Z')),
            "{field}: {et}"
        );
    }
    assert!(
        et["schema"]["created_at"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    let got = s.get("/event-types/shop.price_changed").json();
    assert_eq!(got, et);
    let trailing = s.get("/event-types/shop.price_changed/");
    assert_eq!(trailing.status, 200, "trailing slashes are accepted");
    let list = s.get("/event-types").json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "shop.price_changed")
    );
    let filtered = s.get("/event-types?owning_application=nobody").json();
    assert_eq!(filtered, json!([]));

    let detail = s
        .post("/event-types", &price_changed("shop.price_changed", 4))
        .problem(409);
    assert!(detail.contains("already exists"), "{detail}");

    // Schemas: the current version, by number and as latest.
    let schemas = s.get("/event-types/shop.price_changed/schemas").json();
    assert_eq!(schemas["items"][0]["version"], "1.0.0");
    assert_eq!(
        s.get("/event-types/shop.price_changed/schemas/latest")
            .json()["version"],
        "1.0.0"
    );
    s.get("/event-types/shop.price_changed/schemas/9.9.9")
        .problem(404);

    // Update: retention may change; the name and category may not.
    let mut change = et.clone();
    change["options"] = json!({"retention_time": 3_600_000});
    let updated = s.put("/event-types/shop.price_changed", &change);
    assert_eq!(updated.status, 200, "{}", updated.body);
    let updated = updated.json();
    assert_eq!(updated["options"]["retention_time"], 3_600_000);
    assert_eq!(updated["created_at"], et["created_at"]);
    let mut renamed = et.clone();
    renamed["name"] = json!("shop.other");
    let detail = s
        .put("/event-types/shop.price_changed", &renamed)
        .problem(422);
    assert!(detail.contains("name cannot be changed"), "{detail}");
    let mut recategorised = et.clone();
    recategorised["category"] = json!("data");
    let detail = s
        .put("/event-types/shop.price_changed", &recategorised)
        .problem(422);
    assert!(detail.contains("category cannot be changed"), "{detail}");
    assert_eq!(
        s.get("/event-types/shop.price_changed").json()["options"]["retention_time"],
        3_600_000
    );

    if !storage_has(Needs::TopicDeletion) {
        return;
    }
    let r = s.delete("/event-types/shop.price_changed");
    assert_eq!(r.status, 200);
    s.get("/event-types/shop.price_changed").problem(404);
    s.delete("/event-types/shop.price_changed").problem(404);
    // The name can be used again.
    assert_eq!(
        s.post("/event-types", &price_changed("shop.price_changed", 2))
            .status,
        201
    );
}

#[test]
fn bad_definitions_get_precise_problems_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mut bad_name = price_changed("1-starts-with-digit", 1);
    let detail = s.post("/event-types", &bad_name).problem(422);
    assert!(detail.contains("name"), "{detail}");
    bad_name["name"] = json!("ok.name");
    bad_name["enrichment_strategies"] = json!([]);
    let detail = s.post("/event-types", &bad_name).problem(422);
    assert!(detail.contains("metadata_enrichment"), "{detail}");

    let mut bad_schema = price_changed("bad.schema", 1);
    bad_schema["schema"]["schema"] = json!("{\"type\": 42}");
    let detail = s.post("/event-types", &bad_schema).problem(422);
    assert!(detail.contains("draft-04"), "{detail}");
    bad_schema["schema"]["schema"] = json!("not json at all");
    let detail = s.post("/event-types", &bad_schema).problem(422);
    assert!(detail.contains("not valid JSON"), "{detail}");

    let mut bad_key = price_changed("bad.key", 1);
    bad_key["partition_key_fields"] = json!(["color"]);
    let detail = s.post("/event-types", &bad_key).problem(422);
    assert!(detail.contains("color"), "{detail}");

    let mut missing = price_changed("missing.fields", 1);
    missing
        .as_object_mut()
        .unwrap()
        .remove("owning_application");
    let detail = s.post("/event-types", &missing).problem(422);
    assert!(detail.contains("owning_application"), "{detail}");

    s.send(
        "POST",
        "/event-types",
        "application/json",
        b"{\"name\": ".to_vec(),
    )
    .problem(400);
    s.send("POST", "/event-types", "text/plain", b"{}".to_vec())
        .problem(415);
    s.send(
        "POST",
        "/event-types",
        "application/json",
        vec![0xff, 0xfe, b'{'],
    )
    .problem(400);

    assert_eq!(
        s.get("/event-types").json(),
        json!([]),
        "nothing was created"
    );
}

#[test]
fn event_types_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let a = s.post("/event-types", &price_changed("a.one", 3)).json();
    let b = s.post("/event-types", &price_changed("b.two", 1)).json();
    if storage_has(Needs::TopicDeletion) {
        s.post("/event-types", &price_changed("c.gone", 1));
        s.delete("/event-types/c.gone");
    }
    s.stop();
    let s = Server::start(dir.path());
    assert_eq!(s.get("/event-types/a.one").json(), a);
    assert_eq!(s.get("/event-types/b.two").json(), b);
    s.get("/event-types/c.gone").problem(404);
    assert_eq!(s.get("/event-types").json().as_array().unwrap().len(), 2);
}
