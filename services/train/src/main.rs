use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = train::Config::load().context("failed to load configuration")?;
    let flag = |name: &str| std::env::args().any(|argument| argument == name);
    if flag("--dump-config") {
        return provenant_runtime::print_config(&config);
    }
    if flag("--dump-openapi") {
        return provenant_runtime::print_openapi(&train::api::openapi());
    }
    if flag("--migrate-only") {
        return Ok(train::open_database(&config.database).await?.close().await?);
    }
    let mode = if flag("--worker") { train::Mode::WorkerOnly } else { train::Mode::Service };
    let telemetry = provenant_telemetry::init("train", &config.telemetry)?;
    let app = train::Application::build(config, mode).await?; // connect, migrate, bind
    let outcome = app.run_until_stopped(provenant_runtime::shutdown_on(provenant_runtime::shutdown_signal())).await;
    telemetry.shutdown().await?; // flush spans before the pod goes away
    outcome
}
