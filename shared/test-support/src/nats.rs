use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng as _;

/// A nats-server process with JetStream, owned by a test: its own free port and store.
/// Killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

/// The nats-server binary: `PV_NATS_SERVER`, or the pinned one `make` installs in
/// `.tools/venv`. The machine's own (older) server is never used.
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PV_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pinned = workspace.join(".tools/venv/bin/nats-server");
    if pinned.exists() {
        return Ok(pinned);
    }
    bail!("no nats-server: run `make test` (or scripts/bootstrap.sh) to install the pinned 2.15.1")
}

impl NatsServer {
    pub fn start() -> anyhow::Result<NatsServer> {
        let mut server = NatsServer { child: None, port: crate::free_port(), store: tempfile::tempdir()? };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(binary()?)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start nats-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server did not listen on {} within 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: no clean shutdown) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

static SHARED: OnceLock<Result<(String, Option<NatsServer>), String>> = OnceLock::new();

/// The shared test server's URL (see the crate docs).
pub fn nats_url() -> String {
    let shared = SHARED.get_or_init(|| {
        if let Ok(url) = std::env::var("PV_TEST_NATS_URL") {
            return Ok((url, None));
        }
        NatsServer::start().map(|server| (server.url(), Some(server))).map_err(|error| format!("{error:#}"))
    });
    match shared {
        Ok((url, _)) => url.clone(),
        Err(error) => panic!("no NATS for tests: {error}"),
    }
}

/// A fresh subject root, so each test gets its own subjects and streams on a shared server.
pub fn unique_root() -> String {
    let suffix: u64 = rand::rng().random();
    format!("t{suffix:x}")
}
