//! A subscription stream client for tests: a raw HTTP/1.1 connection read line by line
//! on a thread, so that a test can wait for the next batch with a timeout and cut the
//! connection like a crashing consumer would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

#[derive(Debug)]
pub struct Stream {
    pub status: u16,
    /// `X-Nakadi-StreamId`.
    pub id: String,
    pub content_type: String,
    /// The body when the server refused (a Problem).
    pub body: String,
    lines: mpsc::Receiver<Value>,
    socket: TcpStream,
}

impl Stream {
    /// Opens `GET path` (query parameters in `path`), or `POST path` with `body`.
    pub fn open(addr: SocketAddr, path: &str, body: Option<&Value>) -> Stream {
        Stream::open_with(addr, path, &[], body)
    }

    /// `open` with extra request headers.
    pub fn open_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Stream {
        let mut socket = TcpStream::connect(addr).unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let request = match body {
            None => format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n"),
            Some(b) => {
                let b = b.to_string();
                format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                )
            }
        };
        socket.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let (mut id, mut content_type, mut length, mut chunked) =
            (String::new(), String::new(), None, false);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            let v = v.trim().to_string();
            match k.to_ascii_lowercase().as_str() {
                "x-nakadi-streamid" => id = v,
                "content-type" => content_type = v,
                "content-length" => length = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let (tx, lines) = mpsc::channel();
        let mut body = String::new();
        if status == 200 && chunked {
            std::thread::spawn(move || read_chunked_lines(reader, &tx));
        } else {
            let mut buf = vec![0; length.unwrap_or(0)];
            reader.read_exact(&mut buf).unwrap();
            body = String::from_utf8_lossy(&buf).into_owned();
        }
        Stream {
            status,
            id,
            content_type,
            body,
            lines,
            socket,
        }
    }

    /// The next line, waiting up to `timeout`; `None` when none came or the stream ended.
    pub fn next(&self, timeout: Duration) -> Option<Value> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next line that carries events (keep-alives skipped).
    pub fn next_batch(&self, timeout: Duration) -> Option<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.next(left)?;
            if line.get("events").is_some() {
                return Some(line);
            }
        }
    }

    /// Every line until the server ends the stream (or `timeout` passes).
    pub fn rest(&self, timeout: Duration) -> Vec<Value> {
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(l) = self.next(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            out.push(l);
        }
        out
    }

    /// Cuts the connection, as a consumer that crashed.
    pub fn close(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.close();
    }
}

/// Decodes `Transfer-Encoding: chunked` and sends each complete line as JSON.
fn read_chunked_lines(mut reader: BufReader<TcpStream>, tx: &mpsc::Sender<Value>) {
    let mut pending = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return;
        }
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return;
        };
        if n == 0 {
            return;
        }
        let mut chunk = vec![0; n + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return;
        }
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line).unwrap_or_else(|e| {
                panic!(
                    "a stream line is JSON ({e}): {}",
                    String::from_utf8_lossy(&line)
                )
            });
            if tx.send(value).is_err() {
                return;
            }
        }
    }
}

/// The events of a batch line.
pub fn events(line: &Value) -> Vec<Value> {
    line["events"].as_array().cloned().unwrap_or_default()
}

pub const WAIT: Duration = Duration::from_secs(10);
