//! `sluice serve` processes for the tests: started on 127.0.0.1:0, their listen
//! address read from their log, and killed when dropped, so that a failing test
//! leaves no server behind.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::sluice;

pub(crate) fn spawn_serve(dir: &Path) -> Node {
    Node(
        sluice()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// A `sluice serve` process, killed when dropped (a failing test leaves none behind).
pub(crate) struct Node(pub(crate) Child);

impl std::ops::Deref for Node {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the server's stderr in the background until it says where it listens.
pub(crate) fn wait_for_listen_address(
    server: &mut Child,
) -> (String, std::sync::mpsc::Receiver<String>) {
    let rx = stderr_lines(server);
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split("listen=").nth(1) {
            return (rest.split_whitespace().next().unwrap().to_string(), rx);
        }
    }
    panic!("sluice serve never said where it listens");
}

/// The server's stderr, line by line, read on a thread of its own.
pub(crate) fn stderr_lines(server: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = server.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
