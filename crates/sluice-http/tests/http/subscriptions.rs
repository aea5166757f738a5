//! Subscriptions: create/list/get/update/delete, streaming, commits, rebalancing,
//! redelivery, resets and stats, black-box.

use std::time::Duration;

use serde_json::{Value, json};

use crate::streams::{Stream, WAIT, events};
use crate::{Server, price_changed, price_event};

/// An event type with `partitions` partitions and `n` events spread by sku.
fn event_type_with(s: &Server, name: &str, partitions: u32, n: u64) {
    assert_eq!(
        s.post("/event-types", &price_changed(name, partitions))
            .status,
        201
    );
    publish(s, name, 0..n);
}

fn publish(s: &Server, name: &str, seqs: std::ops::Range<u64>) {
    let batch: Vec<Value> = seqs.map(|i| price_event(&format!("sku-{i}"), i)).collect();
    let r = s.post(&format!("/event-types/{name}/events"), &Value::Array(batch));
    assert_eq!(r.status, 200, "{}", r.body);
}

fn subscribe(s: &Server, body: &Value) -> String {
    let r = s.post("/subscriptions", body);
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_string()
}

fn from_begin(et: &str) -> Value {
    json!({"owning_application": "search-indexer", "event_types": [et], "read_from": "begin"})
}

fn commit(s: &Server, id: &str, stream: &str, cursors: &[&Value]) -> crate::Reply {
    let items: Vec<Value> = cursors.iter().map(|c| (*c).clone()).collect();
    s.json_with(
        "POST",
        &format!("/subscriptions/{id}/cursors"),
        &[("X-Nakadi-StreamId", stream)],
        &json!({"items": items}),
    )
}

fn unconsumed(s: &Server, id: &str) -> Vec<u64> {
    let stats = s.get(&format!("/subscriptions/{id}/stats")).json();
    stats["items"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["unconsumed_events"].as_u64().unwrap())
        .collect()
}

#[test]
fn subscriptions_are_created_once_per_key_listed_updated_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 2, 0);
    event_type_with(&s, "shop.stock", 1, 0);
    let body = json!({"owning_application": "search", "event_types": ["shop.stock", "shop.price"]});
    let created = s.post("/subscriptions", &body);
    assert_eq!(created.status, 201, "{}", created.body);
    let sub = created.json();
    let id = sub["id"].as_str().unwrap();
    assert_eq!(sub["consumer_group"], "default");
    assert_eq!(sub["read_from"], "end");
    assert!(sub["created_at"].as_str().unwrap().ends_with('Z'));
    // Same key, other order: the same subscription, 200.
    let again = s.post(
        "/subscriptions",
        &json!({"owning_application": "search", "event_types": ["shop.price", "shop.stock"]}),
    );
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], sub["id"]);
    let other = subscribe(
        &s,
        &json!({"owning_application": "search", "event_types": ["shop.price"], "consumer_group": "b"}),
    );
    assert_ne!(other, id);

    assert_eq!(s.get(&format!("/subscriptions/{id}")).json(), sub);
    let all = s.get("/subscriptions?limit=1").json();
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    assert!(
        all["_links"]["next"]["href"]
            .as_str()
            .unwrap()
            .contains("offset=1")
    );
    let by_type = s.get("/subscriptions?event_type=shop.stock").json();
    assert_eq!(by_type["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_type["items"][0]["id"], sub["id"]);
    let joined = s
        .get("/subscriptions?event_type=shop.stock,shop.price")
        .json();
    assert_eq!(
        joined["items"].as_array().unwrap().len(),
        1,
        "clin's comma-joined filter"
    );
    let status = s
        .get(&format!("/subscriptions/{id}?show_status=true"))
        .json();
    assert_eq!(status["status"][0]["partitions"][0]["state"], "unassigned");

    // Labels change; event types do not.
    let mut changed = sub.clone();
    changed["labels"] = json!({"team": "search"});
    assert_eq!(s.put(&format!("/subscriptions/{id}"), &changed).status, 204);
    assert_eq!(
        s.get(&format!("/subscriptions/{id}")).json()["labels"]["team"],
        "search"
    );
    changed["event_types"] = json!(["shop.price"]);
    let detail = s
        .put(&format!("/subscriptions/{id}"), &changed)
        .problem(422);
    assert!(detail.contains("event_types cannot be changed"), "{detail}");

    // An event type read by a subscription cannot be deleted.
    let detail = s.delete("/event-types/shop.stock").problem(409);
    assert!(detail.contains(id), "{detail}");
    assert_eq!(s.delete(&format!("/subscriptions/{id}")).status, 204);
    s.get(&format!("/subscriptions/{id}")).problem(404);
    assert_eq!(s.delete("/event-types/shop.stock").status, 200);
}

#[test]
fn bad_subscriptions_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 2, 3);
    let cases = [
        (
            json!({"owning_application": "x", "event_types": ["nope"]}),
            "does not exist",
        ),
        (
            json!({"owning_application": "", "event_types": ["shop.price"]}),
            "owning_application",
        ),
        (
            json!({"owning_application": "x", "event_types": []}),
            "at least one",
        ),
        (
            json!({"owning_application": "x", "event_types": ["shop.price"], "read_from": "cursors",
                   "initial_cursors": [{"event_type": "shop.price", "partition": "0", "offset": "BEGIN"}]}),
            "missing: shop.price/1",
        ),
        (
            json!({"owning_application": "x", "event_types": ["shop.price"], "read_from": "cursors",
                   "initial_cursors": [{"event_type": "shop.price", "partition": "0", "offset": "001-0001-000000000000000099"},
                                       {"event_type": "shop.price", "partition": "1", "offset": "BEGIN"}]}),
            "not available",
        ),
    ];
    for (body, want) in cases {
        let detail = s.post("/subscriptions", &body).problem(422);
        assert!(detail.contains(want), "{want}: {detail}");
    }
    let r = s.send(
        "POST",
        "/subscriptions",
        "application/json",
        b"{not json".to_vec(),
    );
    r.problem(400);
    assert_eq!(s.get("/subscriptions").json()["items"], json!([]));
    s.get("/subscriptions/00000000-0000-0000-0000-000000000000/stats")
        .problem(404);
    let missing = Stream::open(s.addr, "/subscriptions/nope/events", None);
    assert_eq!(missing.status, 404);
}

#[test]
fn a_stream_sends_batches_in_nakadis_format_and_commits_are_cumulative() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 5);
    let id = subscribe(&s, &from_begin("shop.price"));
    assert_eq!(unconsumed(&s, &id), [5], "stats before the first read");

    let st = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?batch_limit=2&max_uncommitted_events=100"),
        None,
    );
    assert_eq!(st.status, 200, "{}", st.body);
    assert_eq!(st.content_type, "application/x-json-stream");
    assert_eq!(st.id.len(), 36);
    let b1 = st.next_batch(WAIT).unwrap();
    let cursor = &b1["cursor"];
    assert_eq!(cursor["partition"], "0");
    assert_eq!(cursor["event_type"], "shop.price");
    assert_eq!(cursor["offset"], "001-0001-000000000000000001");
    assert_eq!(cursor["cursor_token"].as_str().unwrap().len(), 36);
    let got = events(&b1);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["sku"], "sku-0");
    assert_eq!(got[0]["metadata"]["event_type"], "shop.price");
    let b2 = st.next_batch(WAIT).unwrap();
    assert_eq!(events(&b2).len(), 2);

    // Commit the second batch: the first is committed with it.
    assert_eq!(commit(&s, &id, &st.id, &[&b2["cursor"]]).status, 204);
    assert_eq!(unconsumed(&s, &id), [1]);
    let stale = commit(&s, &id, &st.id, &[&b1["cursor"]]);
    assert_eq!(stale.status, 200);
    assert_eq!(stale.json()["items"][0]["result"], "outdated");
    assert_eq!(
        stale.json()["items"][0]["cursor"]["offset"],
        b1["cursor"]["offset"]
    );

    // Commits from another stream, or of what was not sent, are refused.
    let d = commit(
        &s,
        &id,
        "5b4a4c7e-8a52-4b0a-9f7a-3b1f2b0c9d11",
        &[&b2["cursor"]],
    )
    .problem(422);
    assert!(d.contains("not open"), "{d}");
    let mut ahead = b2["cursor"].clone();
    ahead["offset"] = json!("001-0001-000000000000000004");
    let d = commit(&s, &id, &st.id, &[&ahead]).problem(422);
    assert!(d.contains("was not sent"), "{d}");
    let no_header = s.post(
        &format!("/subscriptions/{id}/cursors"),
        &json!({"items": [b2["cursor"]]}),
    );
    no_header.problem(400);

    let cursors = s.get(&format!("/subscriptions/{id}/cursors")).json();
    assert_eq!(cursors["items"][0]["offset"], "001-0001-000000000000000003");
    // The last event comes on the flush timeout (default 30 s is too long here: new data
    // fills the batch instead).
    publish(&s, "shop.price", 5..6);
    let b3 = st.next_batch(WAIT).unwrap();
    assert_eq!(
        events(&b3)
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [4, 5]
    );
}

#[test]
fn batches_flush_on_time_and_keep_alives_end_the_stream_at_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 1);
    let id = subscribe(&s, &from_begin("shop.price"));
    let started = std::time::Instant::now();
    let st = Stream::open(
        s.addr,
        &format!(
            "/subscriptions/{id}/events?batch_limit=10&batch_flush_timeout=1&stream_keep_alive_limit=2"
        ),
        None,
    );
    let b = st.next_batch(WAIT).unwrap();
    assert_eq!(
        events(&b).len(),
        1,
        "a partial batch is flushed after batch_flush_timeout"
    );
    let flushed = started.elapsed();
    assert!(flushed >= Duration::from_millis(900), "{flushed:?}");
    let rest = st.rest(WAIT);
    let keep_alives = rest.iter().filter(|l| l.get("events").is_none()).count();
    assert!(keep_alives >= 2, "{rest:?}");
    assert!(
        rest.iter()
            .all(|l| l["cursor"]["offset"] == "001-0001-000000000000000000")
    );
    let last = rest.last().unwrap();
    assert_eq!(last["info"]["debug"], "stream_keep_alive_limit reached");
}

#[test]
fn uncommitted_events_pause_the_stream_and_come_again_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 6);
    let id = subscribe(&s, &from_begin("shop.price"));
    let params = "batch_limit=2&max_uncommitted_events=4&commit_timeout=1&batch_flush_timeout=1";
    let a = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?{params}"),
        None,
    );
    let b1 = a.next_batch(WAIT).unwrap();
    let b2 = a.next_batch(WAIT).unwrap();
    assert_eq!(events(&b2)[1]["seq"], 3);
    // Four uncommitted: paused.
    assert!(
        a.next_batch(Duration::from_millis(600)).is_none(),
        "paused at max_uncommitted_events"
    );
    assert_eq!(commit(&s, &id, &a.id, &[&b1["cursor"]]).status, 204);
    let b3 = a.next_batch(WAIT).unwrap();
    assert_eq!(events(&b3)[0]["seq"], 4, "resumed after the commit");
    // The consumer dies without committing b2 and b3.
    a.close();
    drop(a);
    // Its partition is kept for it until its commit timeout (1 s), then redelivered.
    let b = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?{params}"),
        None,
    );
    assert_eq!(b.status, 200, "{}", b.body);
    let again = b.next_batch(WAIT).unwrap();
    assert_eq!(events(&again)[0]["seq"], 2, "at least once: b2 comes again");
}

#[test]
fn a_stream_that_does_not_commit_is_closed_after_its_commit_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 2);
    let id = subscribe(&s, &from_begin("shop.price"));
    let a = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?batch_limit=2&commit_timeout=1&batch_flush_timeout=1"),
        None,
    );
    let b = a.next_batch(WAIT).unwrap();
    let rest = a.rest(WAIT);
    let reason = rest.last().unwrap()["info"]["debug"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.starts_with("commit timeout"), "{reason}");
    let d = commit(&s, &id, &a.id, &[&b["cursor"]]).problem(422);
    assert!(d.contains("not open"), "{d}");
    // Its events are free for the next stream at once.
    let next = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?batch_limit=2"),
        None,
    );
    assert_eq!(events(&next.next_batch(WAIT).unwrap())[0]["seq"], 0);
}

#[test]
fn partitions_are_split_among_streams_and_extra_streams_get_409() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 4, 0);
    let id = subscribe(&s, &from_begin("shop.price"));
    let path = format!("/subscriptions/{id}/events?batch_flush_timeout=1");
    let owners = |s: &Server| -> Vec<String> {
        let stats = s.get(&format!("/subscriptions/{id}/stats")).json();
        stats["items"][0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["stream_id"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    let a = Stream::open(s.addr, &path, None);
    assert_eq!(owners(&s), vec![a.id.clone(); 4]);
    let b = Stream::open(s.addr, &path, None);
    let o = owners(&s);
    assert_eq!(o.iter().filter(|x| **x == a.id).count(), 2, "{o:?}");
    assert_eq!(o.iter().filter(|x| **x == b.id).count(), 2, "{o:?}");
    let c = Stream::open(s.addr, &path, None);
    let d = Stream::open(s.addr, &path, None);
    let o = owners(&s);
    for x in [&a, &b, &c, &d] {
        assert_eq!(o.iter().filter(|y| **y == x.id).count(), 1, "{o:?}");
    }
    let e = Stream::open(s.addr, &path, None);
    assert_eq!(e.status, 409);
    assert!(e.body.contains("no free slots"), "{}", e.body);
    // Events published now reach the stream that owns their partition only.
    publish(&s, "shop.price", 0..40);
    let mut seen = 0;
    for st in [&a, &b, &c, &d] {
        while let Some(batch) = st.next_batch(Duration::from_millis(1500)) {
            seen += events(&batch).len();
            assert_eq!(commit(&s, &id, &st.id, &[&batch["cursor"]]).status, 204);
        }
    }
    assert_eq!(seen, 40);
    // A stream leaving with nothing uncommitted frees its partition at once.
    drop(d);
    std::thread::sleep(Duration::from_millis(300));
    let o = owners(&s);
    assert!(!o.contains(&"-".to_string()), "taken over: {o:?}");

    // Direct assignment: a partition asked for is taken; a second ask gets 409.
    let direct = json!({"partitions": [{"event_type": "shop.price", "partition": "0"}], "batch_flush_timeout": 1});
    let x = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events"),
        Some(&direct),
    );
    assert_eq!(x.status, 200, "{}", x.body);
    let stats = s.get(&format!("/subscriptions/{id}/stats")).json();
    let p0 = &stats["items"][0]["partitions"][0];
    assert_eq!(p0["stream_id"], x.id);
    assert_eq!(p0["assignment_type"], "direct");
    let y = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events"),
        Some(&direct),
    );
    assert_eq!(y.status, 409);
    let bad = json!({"partitions": [{"event_type": "shop.price", "partition": "9"}]});
    assert_eq!(
        Stream::open(s.addr, &format!("/subscriptions/{id}/events"), Some(&bad)).status,
        422
    );
}

#[test]
fn cursors_reset_to_given_cursors_begin_end_and_time_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 4);
    // Appends are stamped in milliseconds: keep the instant apart from both batches.
    std::thread::sleep(Duration::from_millis(20));
    let before = sluice_schema::time::now_rfc3339();
    std::thread::sleep(Duration::from_millis(20));
    publish(&s, "shop.price", 4..6);
    let id = subscribe(&s, &from_begin("shop.price"));
    let path = format!("/subscriptions/{id}/events?batch_limit=10&batch_flush_timeout=1");
    let a = Stream::open(s.addr, &path, None);
    assert_eq!(events(&a.next_batch(WAIT).unwrap()).len(), 6);

    let patch =
        |body: Value| s.json_with("PATCH", &format!("/subscriptions/{id}/cursors"), &[], &body);
    let r = patch(
        json!({"items": [{"event_type": "shop.price", "partition": "0", "offset": "001-0001-000000000000000002"}]}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(
        a.rest(WAIT).last().unwrap()["info"]["debug"]
            .as_str()
            .unwrap()
            .contains("reset")
    );
    assert_eq!(unconsumed(&s, &id), [3]);
    assert_eq!(patch(json!({"to": "end"})).status, 204);
    assert_eq!(unconsumed(&s, &id), [0]);
    assert_eq!(patch(json!({"to": before})).status, 204);
    assert_eq!(
        unconsumed(&s, &id),
        [2],
        "from the first event at or after the time"
    );
    assert_eq!(patch(json!({"to": "begin"})).status, 204);
    assert_eq!(unconsumed(&s, &id), [6]);
    for (bad, want) in [
        (json!({"to": "yesterday"}), "RFC 3339"),
        (
            json!({"items": [{"event_type": "shop.price", "partition": "0", "offset": "001-0001-000000000000000099"}]}),
            "not available",
        ),
        (
            json!({"items": [{"event_type": "shop.price", "partition": "7", "offset": "BEGIN"}]}),
            "no partition",
        ),
    ] {
        let detail = patch(bad).problem(422);
        assert!(detail.contains(want), "{want}: {detail}");
    }
    assert_eq!(unconsumed(&s, &id), [6], "a refused reset changes nothing");

    // Committed cursors are in the log: they survive a restart.
    let b = Stream::open(s.addr, &path, None);
    let batch = b.next_batch(WAIT).unwrap();
    let mut three = batch["cursor"].clone();
    three["offset"] = json!("001-0001-000000000000000003");
    assert_eq!(commit(&s, &id, &b.id, &[&three]).status, 204);
    drop(b);
    s.stop();
    s = Server::start(dir.path());
    assert_eq!(unconsumed(&s, &id), [2]);
    let c = Stream::open(s.addr, &path, None);
    let again = c.next_batch(WAIT).unwrap();
    assert_eq!(events(&again)[0]["seq"], 4);
}

#[test]
fn stats_count_unconsumed_events_and_their_age() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 2, 0);
    let id = subscribe(
        &s,
        &json!({"owning_application": "bi", "event_types": ["shop.price"]}),
    );
    publish(&s, "shop.price", 0..10);
    std::thread::sleep(Duration::from_millis(1100));
    let stats = s
        .get(&format!("/subscriptions/{id}/stats?show_time_lag=true"))
        .json();
    let parts = stats["items"][0]["partitions"].as_array().unwrap();
    let total: u64 = parts
        .iter()
        .map(|p| p["unconsumed_events"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 10, "read_from end: only what came after creation");
    for p in parts {
        assert_eq!(p["state"], "unassigned");
        if p["unconsumed_events"].as_u64().unwrap() > 0 {
            assert!(p["consumer_lag_seconds"].as_u64().unwrap() >= 1, "{p}");
        }
    }
    let plain = s.get(&format!("/subscriptions/{id}/stats")).json();
    assert!(
        plain["items"][0]["partitions"][0]
            .get("consumer_lag_seconds")
            .is_none()
    );
}

#[test]
fn stream_parameters_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 0);
    let id = subscribe(&s, &from_begin("shop.price"));
    for (q, want) in [
        ("batch_limit=0", "batch_limit"),
        ("batch_limit=5&stream_limit=2", "stream_limit"),
        ("commit_timeout=61", "at most 60"),
        ("max_uncommitted_events=0", "max_uncommitted_events"),
        ("batch_flush_timeout=10&stream_timeout=5", "stream_timeout"),
    ] {
        let st = Stream::open(s.addr, &format!("/subscriptions/{id}/events?{q}"), None);
        assert_eq!(st.status, 422, "{q}: {}", st.body);
        assert!(st.body.contains(want), "{q}: {}", st.body);
    }
    let st = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?batch_limit=x"),
        None,
    );
    assert_eq!(st.status, 400, "{}", st.body);
}

#[test]
fn an_event_that_keeps_failing_is_isolated_skipped_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 3);
    let mut body = from_begin("shop.price");
    body["annotations"] = json!({
        "nakadi.zalando.org/subscription-max-event-send-count": "2",
        "nakadi.zalando.org/subscription-unprocessable-event-policy": "DEAD_LETTER_QUEUE"
    });
    let id = subscribe(&s, &body);
    let path =
        format!("/subscriptions/{id}/events?batch_limit=3&commit_timeout=1&batch_flush_timeout=1");
    let seqs = |b: &Value| -> Vec<u64> {
        events(b)
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    // Twice the whole batch, never committed: the consumer chokes on something in it.
    for _ in 0..2 {
        let st = Stream::open(s.addr, &path, None);
        assert_eq!(st.status, 200, "{}", st.body);
        assert_eq!(seqs(&st.next_batch(WAIT).unwrap()), [0, 1, 2]);
        st.rest(WAIT); // closed for the commit timeout
    }
    // Now one event at a time: 0 is fine, 1 is the poison pill.
    for round in 0..2 {
        let st = Stream::open(s.addr, &path, None);
        if round == 0 {
            let b = st.next_batch(WAIT).unwrap();
            assert_eq!(seqs(&b), [0], "isolated: a batch of one");
            assert_eq!(commit(&s, &id, &st.id, &[&b["cursor"]]).status, 204);
        }
        assert_eq!(seqs(&st.next_batch(WAIT).unwrap()), [1]);
        st.rest(WAIT);
    }
    // Skipped: the stream goes on with 2, and 1 is in the dead letter queue.
    let st = Stream::open(s.addr, &path, None);
    let b = st.next_batch(WAIT).unwrap_or_else(|| {
        panic!(
            "no batch after the skip; stats {} cursors {}",
            s.get(&format!("/subscriptions/{id}/stats")).json(),
            s.get(&format!("/subscriptions/{id}/cursors")).json()
        )
    });
    assert_eq!(seqs(&b), [2]);
    assert_eq!(commit(&s, &id, &st.id, &[&b["cursor"]]).status, 204);
    drop(st);
    let header = json!([{"partition": "0", "offset": "BEGIN"}]).to_string();
    let dlq = Stream::open_with(
        s.addr,
        "/event-types/nakadi.dead.letter.queue/events?batch_flush_timeout=1&stream_limit=1",
        &[("X-Nakadi-Cursors", &header)],
        None,
    );
    assert_eq!(dlq.status, 200, "{}", dlq.body);
    let letter = &events(&dlq.next_batch(WAIT).unwrap())[0];
    assert_eq!(letter["subscription_id"], id.as_str());
    assert_eq!(letter["event_type"], "shop.price");
    assert_eq!(letter["offset"], "001-0001-000000000000000001");
    assert_eq!(letter["event"]["seq"], 1);
    assert_eq!(unconsumed(&s, &id), [0]);
}

#[test]
fn one_subscription_streams_several_event_types() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 2, 4);
    event_type_with(&s, "shop.offer", 1, 3);
    let id = subscribe(
        &s,
        &json!({"owning_application": "catalog", "event_types": ["shop.price", "shop.offer"], "read_from": "begin"}),
    );
    let st = Stream::open(
        s.addr,
        &format!(
            "/subscriptions/{id}/events?batch_limit=10&batch_flush_timeout=1&max_uncommitted_events=100"
        ),
        None,
    );
    let mut per_type = std::collections::BTreeMap::new();
    while per_type.values().sum::<usize>() < 7 {
        let b = st.next_batch(WAIT).expect("batches of both event types");
        let et = b["cursor"]["event_type"].as_str().unwrap().to_string();
        assert_eq!(events(&b)[0]["metadata"]["event_type"], et.as_str());
        *per_type.entry(et).or_insert(0) += events(&b).len();
        assert_eq!(commit(&s, &id, &st.id, &[&b["cursor"]]).status, 204);
    }
    assert_eq!(per_type["shop.price"], 4);
    assert_eq!(per_type["shop.offer"], 3);
    let stats = s.get(&format!("/subscriptions/{id}/stats")).json();
    assert_eq!(stats["items"].as_array().unwrap().len(), 2);
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_loses_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 0);
    for i in 0..40 {
        publish(&s, "shop.price", i * 1000..(i + 1) * 1000);
    }
    let id = subscribe(&s, &from_begin("shop.price"));
    // A consumer that sends its request and never reads: the socket buffers fill, the
    // stream cannot hand over more and is closed after its commit timeout.
    let mut silent = std::net::TcpStream::connect(s.addr).unwrap();
    write!(
        silent,
        "GET /subscriptions/{id}/events?batch_limit=1000&max_uncommitted_events=1000000&commit_timeout=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let state = || {
        let stats = s.get(&format!("/subscriptions/{id}/stats")).json();
        stats["items"][0]["partitions"][0]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(), "assigned");
    while state() != "unassigned" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state(), "unassigned", "the stalled stream was closed");
    // Nothing was committed: a new consumer gets everything from the start.
    let st = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?batch_limit=1000&max_uncommitted_events=100000"),
        None,
    );
    let first = st.next_batch(WAIT).unwrap();
    assert_eq!(events(&first)[0]["seq"], 0);
    drop(silent);
}

#[test]
fn read_from_cursors_starts_after_the_given_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 1, 5);
    let id = subscribe(
        &s,
        &json!({"owning_application": "x", "event_types": ["shop.price"], "read_from": "cursors",
                "initial_cursors": [{"event_type": "shop.price", "partition": "0",
                                     "offset": "001-0001-000000000000000002"}]}),
    );
    assert_eq!(unconsumed(&s, &id), [2]);
    let st = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?batch_limit=2"),
        None,
    );
    let b = st.next_batch(WAIT).unwrap();
    assert_eq!(
        events(&b)
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [3, 4]
    );
}

#[test]
fn a_new_stream_waits_for_the_commit_of_what_the_old_one_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    event_type_with(&s, "shop.price", 2, 20);
    let id = subscribe(&s, &from_begin("shop.price"));
    let path = format!(
        "/subscriptions/{id}/events?batch_limit=100&batch_flush_timeout=1&commit_timeout=60"
    );
    let a = Stream::open(s.addr, &path, None);
    let (a1, a2) = (a.next_batch(WAIT).unwrap(), a.next_batch(WAIT).unwrap());
    // B arrives while A holds uncommitted events of both partitions: one of them is to
    // move to B, but only once A has committed it.
    let b = Stream::open(s.addr, &path, None);
    assert_eq!(b.status, 200, "{}", b.body);
    let states = |s: &Server| -> Vec<String> {
        let stats = s.get(&format!("/subscriptions/{id}/stats")).json();
        stats["items"][0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["state"].as_str().unwrap().to_string())
            .collect()
    };
    let st = states(&s);
    assert!(st.contains(&"reassigning".to_string()), "{st:?}");
    assert!(
        b.next_batch(Duration::from_millis(1500)).is_none(),
        "B gets nothing yet"
    );
    let d = commit(&s, &id, &b.id, &[&a1["cursor"]]).problem(422);
    assert!(
        d.contains("is not assigned to stream"),
        "only the owner commits: {d}"
    );
    assert_eq!(
        commit(&s, &id, &a.id, &[&a1["cursor"], &a2["cursor"]]).status,
        204
    );
    assert_eq!(states(&s), ["assigned", "assigned"]);
    publish(&s, "shop.price", 20..40);
    let got = b.next_batch(WAIT).expect("B now owns a partition");
    let p = got["cursor"]["partition"].clone();
    assert!(
        events(&got)
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() >= 20),
        "no redelivery after the commit"
    );
    // A keeps the other partition.
    let mine = a.next_batch(WAIT).unwrap();
    assert_ne!(mine["cursor"]["partition"], p);
}

#[test]
fn the_operator_may_allow_commit_timeouts_above_60_s() {
    let dir = tempfile::tempdir().unwrap();
    let config = sluice_bus::BusConfig {
        max_commit_timeout_sec: 600,
        ..sluice_bus::BusConfig::default()
    };
    let s = Server::start_with(dir.path(), config);
    event_type_with(&s, "shop.price", 1, 1);
    let id = subscribe(&s, &from_begin("shop.price"));
    let ok = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?commit_timeout=600"),
        None,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    drop(ok);
    let too_long = Stream::open(
        s.addr,
        &format!("/subscriptions/{id}/events?commit_timeout=601"),
        None,
    );
    assert_eq!(too_long.status, 422);
    assert!(too_long.body.contains("at most 600"), "{}", too_long.body);
}
