//! Interop with `nakadion` (a Rust Nakadi client nobody here wrote): its typed models
//! must parse what Sluice returns, and its calls must get the answers Nakadi gives.

use nakadi_types::event_type::{EventTypeInput, EventTypeName};
use nakadi_types::{FlowId, NakadiBaseUrl};
use nakadion::api::{ApiClient, MonitoringApi, PublishApi, SchemaRegistryApi};
use nakadion::auth::NoAuthAccessTokenProvider;
use serde_json::json;

use crate::{Server, price_changed, price_event};

#[test]
fn nakadion_manages_event_types_and_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let base: NakadiBaseUrl = format!("http://{}", s.addr).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client: ApiClient = ApiClient::default_builder()
            .nakadi_base_url(base)
            .finish(NoAuthAccessTokenProvider)
            .unwrap();
        let mut definition = price_changed("nakadion.price", 3);
        definition["compatibility_mode"] = json!("forward");
        definition["cleanup_policy"] = json!("delete");
        definition["audience"] = json!("company-internal");
        // nakadion knows Nakadi's sizing hint, not Sluice's explicit partition_count.
        definition
            .as_object_mut()
            .unwrap()
            .remove("partition_count");
        definition["default_statistic"] = json!({"messages_per_minute": 100, "message_size": 500,
            "read_parallelism": 3, "write_parallelism": 3});
        let input: EventTypeInput = serde_json::from_value(definition).unwrap();
        client
            .create_event_type(&input, FlowId::random())
            .await
            .expect("create");
        let name = EventTypeName::new("nakadion.price");
        let et = client
            .get_event_type(&name, FlowId::random())
            .await
            .expect("typed get");
        assert_eq!(et.name, name);
        let all = client
            .list_event_types(FlowId::random())
            .await
            .expect("typed list");
        assert!(all.iter().any(|e| e.name == name));

        let events: Vec<serde_json::Value> = (0..12)
            .map(|i| price_event(&format!("sku-{i}"), i))
            .collect();
        let body = serde_json::to_vec(&events).unwrap();
        client
            .publish_events_batch(&name, body, FlowId::random())
            .await
            .expect("publish");
        let bad = serde_json::to_vec(&json!([{"sku": 1}])).unwrap();
        assert!(
            client
                .publish_events_batch(&name, bad, FlowId::random())
                .await
                .is_err(),
            "422 is an error"
        );

        let partitions = client
            .get_event_type_partitions(&name, FlowId::random())
            .await
            .expect("typed partitions");
        assert_eq!(partitions.len(), 3);
        client
            .delete_event_type(&name, FlowId::random())
            .await
            .expect("delete");
        assert!(
            client
                .get_event_type(&name, FlowId::random())
                .await
                .is_err()
        );
    });
}
