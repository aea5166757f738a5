//! Real Nakadi clients that nobody here wrote (pyNakadi, clin from PyPI) against a real
//! `sluice serve`. `scripts/python-clients.sh` installs them; when it cannot, the test
//! fails and says why, rather than skipping.

use std::path::Path;
use std::process::Command;

use crate::{spawn_serve, text, wait_for_listen_address};

#[test]
fn real_nakadi_clients_work_against_sluice() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/interop-venv");
    let install = Command::new("bash")
        .arg(root.join("scripts/python-clients.sh"))
        .arg(&venv)
        .output()
        .expect("bash runs");
    assert!(
        install.status.success(),
        "cannot install the Python Nakadi clients (pyNakadi, clin):\n{}{}",
        text(&install.stdout),
        text(&install.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_serve(&dir.path().join("data"));
    let (addr, _lines) = wait_for_listen_address(&mut server);
    let out = Command::new(venv.join("bin/python"))
        .arg(root.join("tests/interop/nakadi_clients.py"))
        .arg(format!("http://{addr}"))
        .arg(dir.path())
        .arg(venv.join("bin/clin"))
        .output()
        .unwrap();
    let _ = server.kill();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("interop: all checks passed"), "{report}");
}
