//! A real Kafka-protocol broker for tests: Tansu on 127.0.0.1 with its sqlite engine,
//! installed by `scripts/tansu.sh` (a test that needs it fails, saying why, when it
//! cannot be had: it never skips).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Tansu broker for one test; killed when dropped.
#[derive(Debug)]
pub struct Broker {
    pub bootstrap: String,
    port: u16,
    /// Tansu's own process (the child is the shell watching it).
    pid: u32,
    child: Child,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The broker binary, installed once per checkout.
pub fn tansu() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let install = root.join("target/tansu");
    let out = Command::new("bash")
        .arg(root.join("scripts/tansu.sh"))
        .arg(&install)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "cannot install Tansu (the Kafka-protocol broker of these tests):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    install.join("bin/tansu")
}

impl Broker {
    /// A broker on a fresh port over its own temporary storage.
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("a temporary dir");
        Broker::start_in(dir.path().to_path_buf(), Some(dir), free_port())
    }

    /// A broker whose storage is `dir` (created if needed): a broker started later
    /// on the same dir sees the same topics and records.
    pub fn start_on(dir: &Path) -> Broker {
        Broker::start_at(dir, free_port())
    }

    /// `start_on` at a given port (to bring a broker back where clients expect it).
    pub fn start_at(dir: &Path, port: u16) -> Broker {
        std::fs::create_dir_all(dir).expect("the broker's dir");
        Broker::start_in(dir.to_path_buf(), None, port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
    }

    fn start_in(dir: PathBuf, temp: Option<tempfile::TempDir>, port: u16) -> Broker {
        let bin = tansu();
        let url = format!("tcp://127.0.0.1:{port}");
        // The broker dies with this process even when it is killed: the shell waits
        // for its stdin (a pipe from this process) to close, then kills the broker.
        let script = format!(
            "{bin:?} broker --listener-url {url} --advertised-listener-url {url} \
             --storage-engine sqlite://tansu.db >/dev/null & pid=$!; echo $pid; cat >/dev/null; \
             kill $pid; wait $pid"
        );
        let log = std::fs::File::create(dir.join("tansu.log")).expect("the broker's log");
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let mut first = String::new();
        let stdout = child.stdout.take().expect("the shell's stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first)
            .expect("the broker's pid");
        let pid: u32 = first.trim().parse().expect("the broker's pid");
        let bootstrap = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&bootstrap).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu never listened on {bootstrap}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            bootstrap,
            port,
            pid,
            child,
            dir,
            _temp: temp,
        }
    }

    /// The broker's own log (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Closing its stdin makes the shell kill the broker and wait for it.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
