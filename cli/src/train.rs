//! `provenant train submit | status | watch`: model builders' side of the train API.
//!
//! `watch` draws a progress bar from the job's read model, which the workers' progress events
//! feed (step, loss, tokens/s), and ends with the registered model, or with the failure code.

#![allow(clippy::print_stdout, reason = "job states and the final model are the commands' output")]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The train service.
    #[arg(long, default_value = "http://127.0.0.1:8083", env = "PROVENANT_TRAIN_URL")]
    train_url: String,
    /// A model builder's API key.
    #[arg(long, env = "PROVENANT_API_KEY")]
    key: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum TrainCommand {
    /// Submit a job from a JSON spec (see the train API's `/docs`) and print its id.
    Submit {
        #[command(flatten)]
        connection: Connection,
        /// The job spec; `-` reads standard input.
        #[arg(long)]
        file: PathBuf,
        /// Follow the job until it finishes.
        #[arg(long)]
        watch: bool,
    },
    /// Print a job as JSON.
    Status {
        #[command(flatten)]
        connection: Connection,
        job_id: String,
    },
    /// Follow a job with a progress bar until it finishes; fails unless it completes.
    Watch {
        #[command(flatten)]
        connection: Connection,
        job_id: String,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(connection: &Connection) -> Client {
        provenant_telemetry::install_crypto_provider();
        Client { http: reqwest::Client::new(), base: connection.train_url.trim_end_matches('/').to_owned(), key: connection.key.clone() }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response =
            request.bearer_auth(&self.key).send().await.with_context(|| format!("cannot reach the train service at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status}: {} ({})",
                body["error"]["message"].as_str().unwrap_or("no message"),
                body["error"]["code"].as_str().unwrap_or("no code")
            );
        }
        Ok(body)
    }

    async fn job(&self, job_id: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/training-jobs/{job_id}", self.base))).await
    }
}

pub async fn run(command: TrainCommand) -> anyhow::Result<()> {
    match command {
        TrainCommand::Submit { connection, file, watch: follow } => {
            let spec = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read the spec from standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let spec: Value = serde_json::from_str(&spec).context("the spec is not JSON")?;
            let client = Client::new(&connection);
            let submitted = client.send(client.http.post(format!("{}/v1/training-jobs", client.base)).json(&spec)).await?;
            let job_id = submitted["job_id"].as_str().context("the service answered without a job id")?.to_owned();
            println!("{job_id}");
            if follow { watch(&client, &job_id).await } else { Ok(()) }
        }
        TrainCommand::Status { connection, job_id } => {
            let job = Client::new(&connection).job(&job_id).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(())
        }
        TrainCommand::Watch { connection, job_id } => watch(&Client::new(&connection), &job_id).await,
    }
}

async fn watch(client: &Client, job_id: &str) -> anyhow::Result<()> {
    let bar = ProgressBar::new(1);
    bar.set_style(ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} steps  {msg}  eta {eta}").context("progress template")?);
    let job = loop {
        let job = client.job(job_id).await?;
        bar.set_prefix(format!("{} [{}]", job["name"].as_str().unwrap_or(job_id), job["status"].as_str().unwrap_or("?")));
        bar.set_length(job["total_steps"].as_u64().unwrap_or(1).max(1));
        bar.set_position(job["step"].as_u64().unwrap_or(0));
        let loss = job["loss"].as_f64().map_or_else(|| "-".to_owned(), |loss| format!("{loss:.3}"));
        let speed = job["tokens_per_second"].as_u64().unwrap_or(0);
        bar.set_message(format!("loss {loss}  {speed} tok/s  attempt {}", job["attempt"]));
        if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    bar.finish_and_clear();
    match job["status"].as_str() {
        Some("completed") => {
            let model_id = job["model_id"].as_str().unwrap_or_default();
            let model = client.send(client.http.get(format!("{}/v1/models/{model_id}", client.base))).await?;
            println!(
                "{} completed: model {model_id} ({}), held-out perplexity {:.3}, weights {}",
                job["name"].as_str().unwrap_or(job_id),
                model["kind"].as_str().unwrap_or("?"),
                model["held_out_perplexity"].as_f64().unwrap_or(f64::NAN),
                model["weights"]["sha256"].as_str().unwrap_or("?"),
            );
            Ok(())
        }
        status => bail!(
            "job {job_id} {}: {} {}",
            status.unwrap_or("?"),
            job["error_code"].as_str().unwrap_or(""),
            job["error_message"].as_str().unwrap_or("")
        ),
    }
}
