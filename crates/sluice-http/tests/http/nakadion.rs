//! Interop with `nakadion` (a Rust Nakadi client nobody here wrote): its typed models
//! must parse what Sluice returns, and its calls must get the answers Nakadi gives.

use nakadi_types::event_type::{EventTypeInput, EventTypeName};
use nakadi_types::{FlowId, NakadiBaseUrl};
use nakadion::api::{ApiClient, MonitoringApi, PublishApi, SchemaRegistryApi};
use nakadion::auth::NoAuthAccessTokenProvider;
use serde_json::json;

use crate::{Needs, Server, price_changed, price_event, storage_has};

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
        if !storage_has(Needs::TopicDeletion) {
            return;
        }
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

/// nakadion's consumer: it opens a stream with POST, hands batches to a handler and
/// commits them with the stream id, as against Nakadi.
#[test]
fn nakadion_consumes_a_subscription_and_commits() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;
    use nakadion::consumer::{CommitStrategy, Consumer, DevNullLoggingAdapter};
    use nakadion::handler::{
        BatchHandler, BatchHandlerFactory, BatchMeta, Error, EventsHandler, EventsPostAction,
        HandlerAssignment,
    };

    struct Counting(Arc<AtomicUsize>);
    impl EventsHandler for Counting {
        type Event = serde_json::Value;
        fn handle<'a>(
            &'a mut self,
            events: Vec<serde_json::Value>,
            _meta: BatchMeta<'a>,
        ) -> BoxFuture<'a, EventsPostAction> {
            self.0.fetch_add(events.len(), Ordering::SeqCst);
            async { EventsPostAction::Commit }.boxed()
        }
    }
    struct Factory(Arc<AtomicUsize>);
    impl BatchHandlerFactory for Factory {
        fn handler<'a>(
            &'a self,
            _assignment: &'a HandlerAssignment,
        ) -> BoxFuture<'a, Result<Box<dyn BatchHandler>, Error>> {
            let seen = self.0.clone();
            async move { Ok(Box::new(Counting(seen)) as Box<dyn BatchHandler>) }.boxed()
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    assert_eq!(
        s.post("/event-types", &price_changed("nakadion.stock", 2))
            .status,
        201
    );
    let events: Vec<serde_json::Value> = (0..30)
        .map(|i| price_event(&format!("sku-{i}"), i))
        .collect();
    assert_eq!(
        s.post("/event-types/nakadion.stock/events", &json!(events))
            .status,
        200
    );
    let sub = s.post(
        "/subscriptions",
        &json!({"owning_application": "indexer", "event_types": ["nakadion.stock"], "read_from": "begin"}),
    );
    assert_eq!(sub.status, 201);
    let id = sub.json()["id"].as_str().unwrap().to_string();

    let base: NakadiBaseUrl = format!("http://{}", s.addr).parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let client: ApiClient = ApiClient::default_builder()
            .nakadi_base_url(base)
            .finish(NoAuthAccessTokenProvider)
            .unwrap();
        let consumer = Consumer::builder()
            .subscription_id(id.parse().unwrap())
            .configure_committer(|c| c.commit_strategy(CommitStrategy::Immediately))
            .configure_connector(|c| {
                c.configure_stream_parameters(|p| p.batch_limit(5).batch_flush_timeout_secs(1))
            })
            .build_with(client, Factory(seen.clone()), DevNullLoggingAdapter)
            .unwrap();
        let (handle, consuming) = consumer.start();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while seen.load(Ordering::SeqCst) < 30 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Let the last commit land, then stop.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        handle.stop();
        let _ = consuming.await;
    });
    assert_eq!(
        seen.load(Ordering::SeqCst),
        30,
        "nakadion's handler got every event"
    );
    let stats = s.get(&format!("/subscriptions/{id}/stats")).json();
    let left: u64 = stats["items"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["unconsumed_events"].as_u64().unwrap())
        .sum();
    assert_eq!(left, 0, "nakadion committed everything: {stats}");
}
