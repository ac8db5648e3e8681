//! `provenant`: the command-line entry point.
//!
//! `provenant up` runs every service in one process (the embedded default): it starts the
//! pinned NATS server itself unless one is configured, keeps every projection in SQLite files
//! under the data folder, and stops everything cleanly on SIGTERM or Ctrl-C.
//! `provenant api-key new` makes an API key; `provenant datanet import` loads text files as
//! contributions; `provenant train submit|status|watch` runs training jobs;
//! `provenant attribution explain` recomputes a receipt; `provenant inference report` records an
//! inference served elsewhere, as an external producer does.

mod api_key;
mod embedded_nats;
mod explain;
mod import;
mod report;
mod train;
mod up;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "provenant", version, about = "A model factory that remembers its sources")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in this process (NATS started here unless configured).
    Up {
        /// Print the effective configuration (secrets redacted) and exit.
        #[arg(long)]
        dump_config: bool,
        /// Data folder (SQLite files, the embedded NATS store); overrides `data_dir`.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
    },
    /// API keys for the HTTP APIs.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Datanet commands.
    #[command(subcommand)]
    Datanet(DatanetCommand),
    /// Training jobs: submit, status, watch.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Proof of Attribution: receipts.
    #[command(subcommand)]
    Attribution(AttributionCommand),
    /// Inferences served outside provenant.
    #[command(subcommand)]
    Inference(InferenceCommand),
}

#[derive(Subcommand)]
enum InferenceCommand {
    /// Record an inference served elsewhere (as an external producer): keep its prompt and
    /// answer in the transcripts bucket, then publish its InferenceServed without a receipt.
    Report(report::ReportArguments),
}

#[derive(Subcommand)]
enum AttributionCommand {
    /// Show an answer's receipt and recompute it from the model and its attribution index.
    Explain(explain::ExplainArguments),
}

#[derive(Subcommand)]
enum DatanetCommand {
    /// Load text files into a Datanet as contributions (one record per fortune, one contributor per file).
    Import(import::ImportArguments),
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Print a fresh random key and the configuration entry (with its SHA-256) that enables it.
    New {
        /// The principal the key authenticates.
        #[arg(long)]
        principal: String,
        /// Roles: contributor, datanet_owner, model_builder, finance, admin.
        #[arg(long, value_delimiter = ',', default_value = "contributor")]
        roles: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up { dump_config, data_dir } => {
            let mut config = up::Config::load().context("failed to load configuration")?;
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            if dump_config {
                return provenant_runtime::print_config(&config);
            }
            let telemetry = provenant_telemetry::init("provenant", &config.telemetry)?;
            let outcome = up::run(config, provenant_runtime::shutdown_on(provenant_runtime::shutdown_signal())).await;
            if let Err(error) = &outcome {
                tracing::error!(error = format!("{error:#}"), "provenant up failed");
            }
            telemetry.shutdown().await?;
            outcome
        }
        Command::ApiKey(ApiKeyCommand::New { principal, roles }) => api_key::print_new(&principal, &roles),
        Command::Datanet(DatanetCommand::Import(arguments)) => import::run(arguments).await,
        Command::Train(command) => train::run(command).await,
        Command::Attribution(AttributionCommand::Explain(arguments)) => explain::run(arguments).await,
        Command::Inference(InferenceCommand::Report(arguments)) => report::run(arguments).await,
    }
}
