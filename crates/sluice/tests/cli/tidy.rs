//! Tidy: the workspace rules of the architecture guide that a machine can check.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_says_what_it_is_for_and_stays_small() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    assert!(files.len() > 20);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} must open with a //! line saying what it is for",
            f.display()
        );
        let lines = text.lines().count();
        assert!(
            lines <= 800,
            "{} has {lines} lines; split it by noun",
            f.display()
        );
    }
}

#[test]
fn dependencies_run_one_way_and_crates_are_internal() {
    let crates = root().join("crates");
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            manifest.contains("publish = false"),
            "{name} must be publish = false"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name}: folder name = crate name"
        );
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or("")
            .split("\n[")
            .next()
            .unwrap_or("");
        if name != "sluice-kafka" {
            assert!(
                !deps.contains("rdkafka"),
                "{name}: only sluice-kafka links librdkafka"
            );
        }
        if name == "sluice-log" {
            // The bottom layer: no other Sluice crate, no HTTP, no network client.
            let deps = manifest
                .split("[dependencies]")
                .nth(1)
                .unwrap()
                .split("\n[")
                .next()
                .unwrap();
            for forbidden in ["sluice-", "axum", "hyper", "reqwest", "rdkafka"] {
                assert!(
                    !deps.contains(forbidden),
                    "sluice-log must not depend on {forbidden}"
                );
            }
        }
    }
}
