//! Checking a `/metrics` answer with the Prometheus project's own parser and linter.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// promtool: `PV_PROMTOOL`, or the one `scripts/bootstrap.sh --promtool` unpacks (what
/// `make test` runs).
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PV_PROMTOOL") {
        return path.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/prometheus/usr/bin/promtool")
}

/// Panics unless `exposition` parses as Prometheus text format and passes promtool's lint
/// (help text on every family, counters named `_total`, base units): what a scraper and a
/// dashboard rely on.
pub fn assert_valid_exposition(exposition: &str) {
    let path = promtool();
    let mut child = Command::new(&path)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {} ({error}): run scripts/bootstrap.sh --promtool", path.display()));
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("promtool reads the exposition");
    let output = child.wait_with_output().expect("promtool ran");
    assert!(
        output.status.success(),
        "promtool check metrics refused the exposition ({}):\n{}{}\n--- exposition ---\n{exposition}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
