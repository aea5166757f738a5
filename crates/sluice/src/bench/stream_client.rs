//! A minimal subscription consumer for the benchmarks: opens a stream over a keep-alive
//! HTTP/1.1 connection, splits the body into lines, parses each line (events as raw
//! JSON, as a consumer that hands them on would), and commits cursors.

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;

/// One line of a stream, borrowed from the bytes read.
#[derive(Debug, Deserialize)]
pub struct Line<'a> {
    #[serde(borrow)]
    pub cursor: Cursor<'a>,
    #[serde(borrow, default)]
    pub events: Option<Vec<&'a RawValue>>,
}

#[derive(Debug, Deserialize)]
pub struct Cursor<'a> {
    pub partition: &'a str,
    pub offset: &'a str,
    pub event_type: &'a str,
    pub cursor_token: &'a str,
}

impl Cursor<'_> {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"partition": self.partition, "offset": self.offset,
            "event_type": self.event_type, "cursor_token": self.cursor_token})
    }
}

/// An HTTP/1.1 connection to the server.
pub async fn connect(
    authority: &str,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot reach Sluice at {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// An open subscription stream.
#[derive(Debug)]
pub struct StreamClient {
    pub id: String,
    body: Incoming,
    pending: BytesMut,
}

impl StreamClient {
    /// `POST /subscriptions/{id}/events` with `params` as the JSON body.
    pub async fn open(
        authority: &str,
        subscription: &str,
        params: &serde_json::Value,
    ) -> anyhow::Result<StreamClient> {
        let mut sender = connect(authority).await?;
        let req = Request::post(format!("/subscriptions/{subscription}/events"))
            .header("host", authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(params.to_string())))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let id = resp
            .headers()
            .get("x-nakadi-streamid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if status != hyper::StatusCode::OK {
            let body = resp.into_body().collect().await?.to_bytes();
            bail!(
                "stream refused: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(StreamClient {
            id,
            body: resp.into_body(),
            pending: BytesMut::new(),
        })
    }

    /// Waits for more of the body and calls `each` on every complete line; false when
    /// the stream ended.
    pub async fn read(&mut self, mut each: impl FnMut(&[u8])) -> anyhow::Result<bool> {
        let Some(frame) = self.body.frame().await else {
            return Ok(false);
        };
        let Ok(data) = frame?.into_data() else {
            return Ok(true);
        };
        self.pending.extend_from_slice(&data);
        let mut start = 0;
        while let Some(end) = memchr::memchr(b'\n', &self.pending[start..]) {
            each(&self.pending[start..start + end]);
            start += end + 1;
        }
        self.pending.advance(start);
        Ok(true)
    }
}

/// Commits a stream's cursors from beside its reading: remembers the latest cursor of
/// each partition and commits them at most every `every`, over a connection of its own.
pub struct Committer {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
    subscription: String,
    latest: std::collections::BTreeMap<(String, String), serde_json::Value>,
    last: std::time::Instant,
    every: std::time::Duration,
}

impl Committer {
    pub async fn new(
        authority: &str,
        subscription: &str,
        every: std::time::Duration,
    ) -> anyhow::Result<Committer> {
        Ok(Committer {
            sender: connect(authority).await?,
            authority: authority.to_string(),
            subscription: subscription.to_string(),
            latest: Default::default(),
            last: std::time::Instant::now(),
            every,
        })
    }

    /// Remembers the cursor of a line that carried events.
    pub fn note(&mut self, line: &Line<'_>) {
        if line.events.is_some() {
            let key = (line.cursor.event_type.into(), line.cursor.partition.into());
            self.latest.insert(key, line.cursor.to_json());
        }
    }

    /// Commits what was noted when `every` has passed since the last commit.
    pub async fn commit_if_due(&mut self, stream: &str) -> anyhow::Result<()> {
        if self.last.elapsed() < self.every || self.latest.is_empty() {
            return Ok(());
        }
        let cursors = std::mem::take(&mut self.latest).into_values().collect();
        let (authority, subscription) = (&self.authority, &self.subscription);
        commit(&mut self.sender, authority, subscription, stream, cursors).await?;
        self.last = std::time::Instant::now();
        Ok(())
    }
}

/// Commits cursors for a stream over `sender`.
pub async fn commit(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    subscription: &str,
    stream: &str,
    cursors: Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "items": cursors }).to_string();
    let req = Request::post(format!("/subscriptions/{subscription}/cursors"))
        .header("host", authority)
        .header("content-type", "application/json")
        .header("x-nakadi-streamid", stream)
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "commit refused: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Creates a subscription reading `event_type` from the beginning, in a consumer group
/// of its own (a fresh start each run).
pub fn subscribe(url: &str, event_type: &str, read_from: &str) -> anyhow::Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let group = format!(
        "bench-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let body = serde_json::json!({"owning_application": "sluice-bench", "event_types": [event_type],
        "consumer_group": group, "read_from": read_from});
    let mut r = agent
        .post(&format!("{}/subscriptions", url.trim_end_matches('/')))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())?;
    let text = r.body_mut().read_to_string()?;
    if r.status() != 201 {
        bail!("cannot create a subscription: {text}");
    }
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v["id"].as_str().unwrap_or_default().to_string())
}
