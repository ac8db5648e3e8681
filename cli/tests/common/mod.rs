//! The real `provenant` binary as a child process, with the NATS server it starts itself and
//! SQLite files in its data folder: shared by the end-to-end tests.
#![allow(dead_code, reason = "each test binary uses its own part of this module")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVICES: [&str; 5] = ["ingest", "validate", "train", "infer", "settle"];

/// Indexes into [`SERVICES`] (and so into a suite's ports).
pub const INGEST: usize = 0;
pub const VALIDATE: usize = 1;
pub const TRAIN: usize = 2;
pub const INFER: usize = 3;
pub const SETTLE: usize = 4;

pub const OWNER_KEY: &str = "pvk_end_to_end_owner";

pub use provenant_test_support::free_port;

fn nats_server_binary() -> PathBuf {
    std::env::var_os("PV_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/nats-server"))
}

/// A configuration folder whose `local.yaml` enables [`OWNER_KEY`] for principal `owner` with
/// `roles` (YAML flow list items: `"datanet_owner, contributor"`).
pub fn config_dir(roles: &str) -> tempfile::TempDir {
    let folder = tempfile::tempdir().expect("config dir");
    let hash = provenant_runtime::identity::hash_key(OWNER_KEY).iter().map(|byte| format!("{byte:02x}")).collect::<String>();
    let yaml = format!("identity:\n  api_keys:\n    - principal: owner\n      roles: [{roles}]\n      key_sha256: {hash}\n");
    std::fs::write(folder.path().join("local.yaml"), yaml).expect("write config");
    folder
}

pub struct Suite {
    child: Child,
    ports: Vec<u16>,
    /// Where the child's standard error goes, so that a failure can quote it.
    stderr: PathBuf,
}

impl Suite {
    /// `provenant up` with every service on its own port of `ports`; `environment` adds
    /// variables (configuration overrides) to the child's.
    pub fn start(data_dir: &Path, config_dir: &Path, ports: &[u16], nats_port: u16, environment: &[(&str, String)]) -> Suite {
        let mut command = Command::new(env!("CARGO_BIN_EXE_provenant"));
        command
            .args(["up", "--data-dir"])
            .arg(data_dir)
            .env("PROVENANT_NATS__SERVER_BINARY", nats_server_binary())
            .env("PROVENANT_NATS__EMBEDDED_PORT", nats_port.to_string())
            .env("PROVENANT_CONFIG_DIR", config_dir)
            .env("PROVENANT_ENVIRONMENT", "local")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let stderr = data_dir.join("provenant.stderr.log");
        command.stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (service, port) in SERVICES.iter().zip(ports) {
            command.env(format!("PROVENANT_HTTP__{}_PORT", service.to_uppercase()), port.to_string());
        }
        for (name, value) in environment {
            command.env(name, value);
        }
        Suite { child: command.spawn().expect("provenant starts"), ports: ports.to_vec(), stderr }
    }

    pub fn url(&self, service: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[service])
    }

    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (service, name) in SERVICES.iter().enumerate() {
            loop {
                let ready = http.get(self.url(service, "/health/ready")).send().await.is_ok_and(|response| response.status() == 200);
                if ready {
                    break;
                }
                if let Some(status) = self.child.try_wait().expect("poll") {
                    panic!("provenant exited ({status}) before {name} was ready; its standard error:\n{}", self.stderr());
                }
                assert!(Instant::now() < deadline, "{name} never became ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits for the process to exit on its own (it must, within `seconds`).
    pub fn wait_for_exit(&mut self, seconds: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll") {
                return status;
            }
            assert!(Instant::now() < deadline, "provenant still runs after {seconds} s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the child wrote to its standard error (warnings and errors only: `RUST_LOG=warn`).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then the process must exit cleanly on its own.
    pub fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll") {
                assert!(status.success(), "provenant exited with {status}; its standard error:\n{}", self.stderr());
                return;
            }
            assert!(Instant::now() < deadline, "provenant ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
