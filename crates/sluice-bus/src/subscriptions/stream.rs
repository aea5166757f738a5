//! One subscription stream: reads the partitions the session gives it from the log and
//! writes Nakadi's `application/x-json-stream` lines, one batch per line.
//!
//! ```text
//!  loop: take the partitions the session says are ours (drop those taken away)
//!        -> emit batches that are full, due (batch_flush_timeout) or capped by
//!           max_uncommitted_events; keep-alive lines for idle partitions
//!        -> start a fetch for every partition with room (max_uncommitted_events)
//!        -> hand the bytes to the response (bounded: a client that stops reading
//!           stalls the stream, and is cut off after its commit timeout)
//!        -> wait for: fetched records, a session change, a deadline, the client leaving
//! ```
//!
//! Events are copied once, from the log's records into the response line; nothing is
//! buffered beyond what the stream may have uncommitted plus one fetch per partition.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sluice_log::{
    FetchRequest, Fetched, Log, LogError, Offset, PartitionId, Record, StoredRecord, TopicName,
};
use tokio::sync::mpsc;

use super::DEAD_LETTER_EVENT_TYPE;
use super::Session;
use super::model::UnprocessablePolicy;
use super::params::Resolved;
use super::session::{Sent, StreamCtl};
use super::store::{PartKey, Store};
use crate::cursor::CursorOffset;

/// Records read from the log per fetch, at most.
const FETCH_RECORDS: u64 = 8192;
const FETCH_BYTES: usize = 1 << 20;
/// A fetch waits at most this long for records (then the loop looks around again).
const MAX_FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

type FetchFuture =
    Pin<Box<dyn Future<Output = (PartKey, u64, sluice_log::Result<Fetched>)> + Send>>;

/// A partition this stream sends.
#[derive(Debug)]
struct Local {
    topic: TopicName,
    /// Where the next fetch starts.
    next: Offset,
    /// Fetched, not sent yet.
    buffer: VecDeque<StoredRecord>,
    /// A fetch of this generation is running (a stale one's result is dropped).
    fetching: Option<u64>,
    last_emit: Instant,
    /// Keep-alive lines sent since the last events.
    keep_alives: u64,
    /// The cursor of the last line (events sent, or where the partition starts).
    cursor: CursorOffset,
}

/// Who decides which partitions a stream sends, and from where.
pub(crate) enum Owner {
    /// A subscription's stream: its session assigns partitions; it starts from the
    /// committed cursors, and its events count as uncommitted until committed.
    Subscription {
        store: Arc<Store>,
        session: Arc<Session>,
        ctl: Arc<StreamCtl>,
    },
    /// Nakadi's low-level read: fixed partitions from given cursors, nothing committed.
    Direct {
        starts: Vec<(PartKey, CursorOffset)>,
    },
}

pub(crate) struct StreamTask {
    pub log: Arc<dyn Log>,
    pub owner: Owner,
    pub params: Resolved,
    pub tx: mpsc::Sender<Bytes>,
    /// Batches carry `event_type` and `cursor_token` (subscriptions) or not (low-level).
    pub subscription_cursors: bool,
}

impl std::fmt::Debug for StreamTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = match &self.owner {
            Owner::Subscription { ctl, .. } => ctl.id.as_str(),
            Owner::Direct { .. } => "low-level",
        };
        f.debug_struct("StreamTask")
            .field("stream", &id)
            .finish_non_exhaustive()
    }
}

/// Partitions newly ours (with the cursor each starts after), and events to skip first
/// (partition, offset) before their partition starts.
type Claimed = (Vec<(PartKey, CursorOffset)>, Vec<(PartKey, u64)>);

/// A low-level read keeps at most this many fetched, unsent events per partition.
const DIRECT_BUFFER: u64 = 2 * FETCH_RECORDS;

/// Why a stream loop ended.
enum End {
    /// The client went away.
    Gone,
    /// The server ends it; the reason goes into the last line.
    Closed(String),
}

impl StreamTask {
    pub async fn run(self) {
        let end = self.stream().await;
        match &end {
            End::Gone => tracing::debug!(stream = ?self, "client left"),
            End::Closed(reason) => tracing::debug!(stream = ?self, reason, "stream closed"),
        }
        if let Owner::Subscription { session, ctl, .. } = &self.owner {
            ctl.disconnected();
            session.state.lock().rebalance(Instant::now());
        }
    }

    fn close_reason(&self) -> Option<String> {
        match &self.owner {
            Owner::Subscription { ctl, .. } => ctl.close_reason(),
            Owner::Direct { .. } => None,
        }
    }

    /// Partitions newly ours and the cursor each starts after; `Err` ends the stream
    /// (a commit timeout).
    fn claim(
        &self,
        locals: &BTreeMap<PartKey, Local>,
        first: bool,
        now: Instant,
    ) -> Result<Claimed, String> {
        let (store, session, ctl) = match &self.owner {
            Owner::Direct { starts } => {
                return Ok((if first { starts.clone() } else { Vec::new() }, Vec::new()));
            }
            Owner::Subscription {
                store,
                session,
                ctl,
            } => (store, session, ctl),
        };
        let mut st = session.state.lock();
        if st.next_deadline().is_some_and(|d| d <= now) {
            st.rebalance(now);
        }
        let late = st.parts.iter().find(|(_, part)| {
            part.owned_by(&ctl.id)
                && part
                    .inflight
                    .front()
                    .is_some_and(|s| now >= s.at + self.params.commit_timeout)
        });
        if let Some(((et, p), _)) = late {
            let reason = format!(
                "commit timeout: events of {et} partition {p} were not committed within {} s",
                self.params.commit_timeout.as_secs()
            );
            drop(st);
            ctl.forfeit(reason.clone());
            return Err(reason);
        }
        let skips = st
            .parts
            .iter()
            .filter(|(k, p)| p.sendable_by(ctl) && !locals.contains_key(*k))
            .filter_map(|(k, p)| Some((k.clone(), p.skip?)))
            .collect();
        let fresh = st
            .parts
            .iter()
            .filter(|(k, p)| p.sendable_by(ctl) && p.skip.is_none() && !locals.contains_key(*k))
            .map(|(k, p)| {
                // After what we sent and was not committed, or after the commit.
                let start = match p.inflight.back() {
                    Some(sent) => CursorOffset::At(sent.last),
                    None => store.cursor(&session.id, k).unwrap_or(CursorOffset::Begin),
                };
                (k.clone(), start)
            })
            .collect();
        Ok((fresh, skips))
    }

    /// Skips an event that failed too often on its own: commits past it, after
    /// publishing it to the dead letter event type when the subscription asks for that.
    async fn skip(&self, key: &PartKey, offset: u64) -> Result<(), String> {
        let Owner::Subscription {
            store,
            session,
            ctl,
        } = &self.owner
        else {
            return Ok(());
        };
        let _one = session.commits.lock().await;
        let settings = session.state.lock().dead_letters;
        if let Some(dl) = settings.filter(|d| d.policy == UnprocessablePolicy::DeadLetter) {
            let topic = TopicName::new(key.0.as_str()).map_err(|e| e.to_string())?;
            let read = FetchRequest::new(Offset(offset)).max_records(1);
            let f = self
                .log
                .fetch(&topic, PartitionId(key.1), read)
                .await
                .map_err(|e| e.to_string())?;
            let event = f
                .records
                .first()
                .filter(|r| r.offset.0 == offset)
                .and_then(|r| r.value.as_ref())
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok());
            let letter = serde_json::json!({
                "subscription_id": session.id,
                "event_type": key.0,
                "partition": key.1.to_string(),
                "offset": CursorOffset::At(offset).to_string(),
                "error": {"message": format!(
                    "not committed after being sent {} times on its own", dl.max_send_count)},
                "event": event,
                "metadata": {"eid": token(), "occurred_at": sluice_schema::time::now_rfc3339()},
            });
            let dlq = TopicName::new(DEAD_LETTER_EVENT_TYPE).map_err(|e| e.to_string())?;
            let record = Record::value(Bytes::from(letter.to_string()));
            self.log
                .append(&dlq, PartitionId(0), vec![record])
                .await
                .map_err(|e| format!("cannot write a dead letter: {e}"))?;
        }
        store
            .set_cursors(
                &session.id,
                ctl.generation,
                &[(key.clone(), CursorOffset::At(offset))],
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(subscription = %session.id, event_type = %key.0, partition = key.1, offset, "skipped an unprocessable event");
        session.state.lock().committed(key, offset);
        Ok(())
    }

    /// Emits what is ready on every partition still ours; returns how many more events
    /// may be fetched, and the session's next deadline.
    fn emit_all(
        &self,
        locals: &mut BTreeMap<PartKey, Local>,
        out: &mut Vec<u8>,
        now: Instant,
        sent_total: &mut u64,
    ) -> (u64, Option<Instant>) {
        // Room for every buffered event and every line's cursor up front: growing the
        // buffer line by line would copy it again and again (with batch_limit 1 a line
        // is one event, and its cursor can be half of the line).
        let batch = self.params.batch_limit.max(1) as usize;
        let room: usize = locals
            .iter()
            .map(|((event_type, _), l)| {
                let events: usize = l
                    .buffer
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len() + 1))
                    .sum();
                let lines = l.buffer.len().div_ceil(batch) + 1; // + a keep-alive
                events + lines * (LINE_OVERHEAD + event_type.len())
            })
            .sum();
        out.reserve(room);
        let Owner::Subscription { session, ctl, .. } = &self.owner else {
            for (key, local) in locals.iter_mut() {
                for batch in self.emit(key, local, out, now, 0, *sent_total, None) {
                    *sent_total += batch.count;
                }
            }
            let most = locals
                .values()
                .map(|l| l.buffer.len() as u64)
                .max()
                .unwrap_or(0);
            return (DIRECT_BUFFER.saturating_sub(most), None);
        };
        let mut st = session.state.lock();
        locals.retain(|k, _| st.parts.get(k).is_some_and(|p| p.sendable_by(ctl)));
        let mut uncommitted: u64 = st
            .parts
            .values()
            .filter(|p| p.owned_by(&ctl.id))
            .map(|p| p.uncommitted())
            .sum();
        for (key, local) in locals.iter_mut() {
            let one_at_a_time = st
                .parts
                .get(key)
                .filter(|p| p.isolate_until.is_some())
                .map(|p| !p.inflight.is_empty());
            for batch in self.emit(
                key,
                local,
                out,
                now,
                uncommitted,
                *sent_total,
                one_at_a_time,
            ) {
                uncommitted += batch.count;
                *sent_total += batch.count;
                st.sent(key, batch);
            }
        }
        let buffered: u64 = locals.values().map(|l| l.buffer.len() as u64).sum();
        let room = self
            .params
            .max_uncommitted_events
            .saturating_sub(uncommitted + buffered);
        (room, st.next_deadline())
    }

    async fn stream(&self) -> End {
        let started = Instant::now();
        let stream_deadline = started + self.params.stream_timeout;
        let mut locals: BTreeMap<PartKey, Local> = BTreeMap::new();
        let mut fetches: FuturesUnordered<FetchFuture> = FuturesUnordered::new();
        let mut generation = 0u64;
        let mut out: Vec<u8> = Vec::new();
        let mut sent_total = 0u64;
        let mut first = true;
        let notify = match &self.owner {
            Owner::Subscription { ctl, .. } => Some(ctl.clone()),
            Owner::Direct { .. } => None,
        };
        loop {
            let now = Instant::now();
            if let Some(reason) = self.close_reason() {
                return self.finish(&locals, out, reason).await;
            }
            // 1. Ours: what the session lets us send.
            let (fresh, skips) = match self.claim(&locals, first, now) {
                Ok(claimed) => claimed,
                Err(reason) => return self.finish(&locals, out, reason).await,
            };
            first = false;
            for (key, offset) in &skips {
                if let Err(reason) = self.skip(key, *offset).await {
                    return self.finish(&locals, out, reason).await;
                }
            }
            if !skips.is_empty() {
                continue; // claim again: those partitions start after the skipped events
            }
            for (key, cursor) in fresh {
                match self.start_local(&key, cursor, now).await {
                    Ok(local) => {
                        locals.insert(key, local);
                    }
                    Err(reason) => return self.finish(&locals, out, reason).await,
                }
            }
            // 2. Emit what is ready (ownership checked again: it may have moved).
            let (room, wake_session) = self.emit_all(&mut locals, &mut out, now, &mut sent_total);
            let limit = self.params.stream_limit;
            if limit > 0 && sent_total >= limit {
                return self
                    .finish(&locals, out, "stream_limit reached".into())
                    .await;
            }
            if now >= stream_deadline {
                return self
                    .finish(&locals, out, "stream_timeout reached".into())
                    .await;
            }
            let alive = self.params.stream_keep_alive_limit;
            if alive > 0 && !locals.is_empty() && locals.values().all(|l| l.keep_alives >= alive) {
                let reason = "stream_keep_alive_limit reached".to_string();
                return self.finish(&locals, out, reason).await;
            }
            // 3. Fetch for every partition with room (one fetch each at a time).
            let mut room = room;
            if limit > 0 {
                let buffered: u64 = locals.values().map(|l| l.buffer.len() as u64).sum();
                room = room.min(limit.saturating_sub(sent_total + buffered));
            }
            for (key, local) in &mut locals {
                if room == 0 {
                    break;
                }
                if local.fetching.is_some() {
                    continue;
                }
                generation += 1;
                local.fetching = Some(generation);
                let wait = (local.last_emit + self.params.batch_flush_timeout)
                    .saturating_duration_since(now)
                    .min(MAX_FETCH_WAIT);
                let request = FetchRequest::new(local.next)
                    .max_records(room.min(FETCH_RECORDS) as usize)
                    .max_bytes(FETCH_BYTES)
                    .max_wait(wait);
                let (log, topic, key) = (self.log.clone(), local.topic.clone(), key.clone());
                let id = generation;
                fetches.push(Box::pin(async move {
                    let p = PartitionId(key.1);
                    let r = log.fetch(&topic, p, request).await;
                    (key, id, r)
                }));
            }
            // 4. Hand over what is written.
            if !out.is_empty() {
                let chunk = Bytes::from(std::mem::take(&mut out));
                if let Err(end) = self.send(chunk).await {
                    return end;
                }
            }
            // 5. Wait.
            let mut wake = stream_deadline;
            for l in locals.values() {
                wake = wake.min(l.last_emit + self.params.batch_flush_timeout);
            }
            if let Some(d) = wake_session {
                wake = wake.min(d);
            }
            tokio::select! {
                biased;
                () = self.tx.closed() => return End::Gone,
                () = async {
                    match &notify {
                        Some(ctl) => ctl.notify.notified().await,
                        None => std::future::pending().await,
                    }
                } => {}
                Some((key, id, result)) = fetches.next(), if !fetches.is_empty() => {
                    if let Err(reason) = take_fetched(&mut locals, key, id, result) {
                        return self.finish(&locals, out, reason).await;
                    }
                    // Take whatever else is ready without waiting.
                    while let Some(Some((key, id, result))) = futures_util::FutureExt::now_or_never(fetches.next()) {
                        if let Err(reason) = take_fetched(&mut locals, key, id, result) {
                            return self.finish(&locals, out, reason).await;
                        }
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// A partition newly ours, sending what follows `cursor`.
    async fn start_local(
        &self,
        key: &PartKey,
        cursor: CursorOffset,
        now: Instant,
    ) -> Result<Local, String> {
        let topic = TopicName::new(key.0.as_str()).map_err(|e| e.to_string())?;
        let next = match cursor {
            CursorOffset::At(o) => Offset(o + 1),
            CursorOffset::Begin => {
                self.log
                    .offsets(&topic, PartitionId(key.1))
                    .await
                    .map_err(|e| e.to_string())?
                    .earliest
            }
        };
        Ok(Local {
            topic,
            next,
            buffer: VecDeque::new(),
            fetching: None,
            last_emit: now,
            keep_alives: 0,
            cursor,
        })
    }

    /// Writes the batches of `local` that are ready; returns (last offset, events) of each.
    /// `one_at_a_time`: the partition is being searched for an unprocessable event
    /// (dead letters): a batch of one event, and only when nothing is uncommitted.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        key: &PartKey,
        local: &mut Local,
        out: &mut Vec<u8>,
        now: Instant,
        mut uncommitted: u64,
        mut sent_total: u64,
        one_at_a_time: Option<bool>,
    ) -> Vec<Sent> {
        let p = &self.params;
        let due = now >= local.last_emit + p.batch_flush_timeout;
        let mut sent = Vec::new();
        loop {
            let n = local.buffer.len() as u64;
            if n == 0 {
                break;
            }
            if let Some(busy) = one_at_a_time {
                if busy || !sent.is_empty() {
                    break;
                }
                let r = local.buffer.pop_front().expect("not empty");
                local.cursor = CursorOffset::At(r.offset.0);
                local.last_emit = now;
                local.keep_alives = 0;
                if let Some(v) = &r.value {
                    write_line(out, key, local.cursor, true, Some(&[v]), None);
                    sent.push(Sent {
                        first: r.offset.0,
                        last: r.offset.0,
                        count: 1,
                        at: now,
                    });
                }
                continue;
            }
            let stream_left = if p.stream_limit > 0 {
                p.stream_limit.saturating_sub(sent_total)
            } else {
                u64::MAX
            };
            let ready = n >= p.batch_limit
                || uncommitted + n >= p.max_uncommitted_events
                || n >= stream_left
                || due;
            if !ready || stream_left == 0 {
                break;
            }
            let take = n.min(p.batch_limit).min(stream_left) as usize;
            let records: Vec<StoredRecord> = local.buffer.drain(..take).collect();
            let first = records.first().map_or(0, |r| r.offset.0);
            let last = records.last().map_or(0, |r| r.offset.0);
            let events: Vec<&Bytes> = records.iter().filter_map(|r| r.value.as_ref()).collect();
            local.cursor = CursorOffset::At(last);
            local.last_emit = now;
            local.keep_alives = 0;
            if events.is_empty() {
                // Only tombstones: nothing to send; the next batch's cursor covers them.
                continue;
            }
            write_line(
                out,
                key,
                local.cursor,
                self.subscription_cursors,
                Some(&events),
                None,
            );
            let count = events.len() as u64;
            sent.push(Sent {
                first,
                last,
                count,
                at: now,
            });
            uncommitted += count;
            sent_total += count;
        }
        if local.buffer.is_empty() && now >= local.last_emit + p.batch_flush_timeout {
            write_line(
                out,
                key,
                local.cursor,
                self.subscription_cursors,
                None,
                None,
            );
            local.last_emit = now;
            local.keep_alives += 1;
        }
        sent
    }

    /// Hands bytes to the response; a client that does not take them within its
    /// commit timeout is cut off.
    async fn send(&self, chunk: Bytes) -> Result<(), End> {
        match tokio::time::timeout(self.params.commit_timeout, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                let reason = format!(
                    "the client did not read for {} s (commit timeout)",
                    self.params.commit_timeout.as_secs()
                );
                if let Owner::Subscription { ctl, .. } = &self.owner {
                    ctl.forfeit(reason.clone());
                }
                tracing::info!(stream = ?self, "{reason}");
                Err(End::Closed(reason))
            }
        }
    }

    /// The last line: a keep-alive of one partition carrying the reason, so a client
    /// sees why its stream ended.
    async fn finish(
        &self,
        locals: &BTreeMap<PartKey, Local>,
        mut out: Vec<u8>,
        reason: String,
    ) -> End {
        if let Some((key, local)) = locals.iter().next() {
            write_line(
                &mut out,
                key,
                local.cursor,
                self.subscription_cursors,
                None,
                Some(&reason),
            );
        }
        if !out.is_empty() {
            let _ = self.send(Bytes::from(out)).await;
        }
        End::Closed(reason)
    }
}

/// Takes a fetch's records into their partition's buffer.
fn take_fetched(
    locals: &mut BTreeMap<PartKey, Local>,
    key: PartKey,
    id: u64,
    result: sluice_log::Result<Fetched>,
) -> Result<(), String> {
    let Some(local) = locals.get_mut(&key).filter(|l| l.fetching == Some(id)) else {
        return Ok(()); // the partition went elsewhere meanwhile
    };
    local.fetching = None;
    match result {
        Ok(f) => {
            local.next = f.next;
            local.buffer.extend(f.records);
            Ok(())
        }
        Err(LogError::OffsetOutOfRange {
            earliest,
            latest,
            requested,
            ..
        }) => Err(format!(
            "offset {} of {} partition {} is no longer available (retention); available: {} to {}",
            CursorOffset::At(requested),
            key.0,
            key.1,
            CursorOffset::At(earliest),
            CursorOffset::newest(earliest, latest)
        )),
        Err(e) => Err(format!("reading {} partition {}: {e}", key.0, key.1)),
    }
}

/// The bytes of a line besides its events and event type name, at most (without
/// `info`): `{"cursor":{"partition":"4294967295","offset":"001-0001-` + 18 digits +
/// `","event_type":"","cursor_token":"` + 36 + `"},"events":[]}` and a newline.
const LINE_OVERHEAD: usize = 160;

/// One line of the stream: `{"cursor":{...},"events":[...],"info":{"debug":...}}`.
fn write_line(
    out: &mut Vec<u8>,
    (event_type, partition): &PartKey,
    offset: CursorOffset,
    subscription: bool,
    events: Option<&[&Bytes]>,
    debug: Option<&str>,
) {
    use std::io::Write;
    let _ = write!(
        out,
        r#"{{"cursor":{{"partition":"{partition}","offset":"{offset}""#
    );
    if subscription {
        let _ = write!(out, r#","event_type":"{event_type}","cursor_token":""#);
        write_token(out);
        out.push(b'"');
    }
    out.push(b'}');
    if let Some(events) = events {
        out.extend_from_slice(br#","events":["#);
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(e);
        }
        out.push(b']');
    }
    if let Some(debug) = debug {
        out.extend_from_slice(br#","info":{"debug":"#);
        let _ = serde_json::to_writer(&mut *out, debug);
        out.push(b'}');
    }
    out.extend_from_slice(b"}\n");
}

/// A random UUID (version 4): a cursor token (clients echo it; it is not checked).
fn token() -> String {
    let mut out = Vec::with_capacity(36);
    write_token(&mut out);
    String::from_utf8(out).expect("hex digits and dashes")
}

/// Appends a random version-4 UUID to `out`, without formatting machinery: a stream
/// writes one per line.
fn write_token(out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    // Version 4 in the 13th digit, variant 10 in the top bits of the 17th.
    let a = (a & !0xf000) | 0x4000;
    let b = (b & !(0xc000 << 48)) | (0x8000 << 48);
    let digits = (0..16).map(|i| (a >> (60 - 4 * i)) & 0xf);
    let digits = digits.chain((0..16).map(|i| (b >> (60 - 4 * i)) & 0xf));
    for (i, d) in digits.enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push(b'-');
        }
        out.push(HEX[d as usize]);
    }
}

/// Starts Nakadi's low-level read of `starts` (partition, cursor to read after).
pub(crate) fn spawn_direct(
    log: Arc<dyn Log>,
    starts: Vec<(PartKey, CursorOffset)>,
    params: Resolved,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(2);
    let task = StreamTask {
        log,
        owner: Owner::Direct { starts },
        params,
        tx,
        subscription_cursors: false,
    };
    tokio::spawn(task.run());
    rx
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursor_tokens_are_random_version_4_uuids() {
        let (a, b) = (super::token(), super::token());
        for t in [&a, &b] {
            let u = uuid::Uuid::parse_str(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(u.get_version_num(), 4, "{t}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{t}");
            assert_eq!(u.hyphenated().to_string(), *t);
        }
        assert_ne!(a, b);
    }

    #[test]
    fn line_overhead_covers_the_longest_cursor() {
        let (event, mut out) = (bytes::Bytes::from_static(b"{}"), Vec::new());
        let key = ("shop.product".to_string(), u32::MAX);
        let offset = crate::CursorOffset::At(u64::MAX / 100);
        super::write_line(&mut out, &key, offset, true, Some(&[&event]), None);
        assert!(
            out.len() <= super::LINE_OVERHEAD + key.0.len() + event.len(),
            "{}",
            out.len()
        );
    }
}
