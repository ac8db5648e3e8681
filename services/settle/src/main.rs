use anyhow::Context as _;

/// The services' allocator (`provenant_runtime::allocator` says why).
#[global_allocator]
static ALLOCATOR: provenant_runtime::allocator::ServiceAllocator = provenant_runtime::allocator::SERVICE_ALLOCATOR;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|argument| argument == "--dump-openapi") {
        return provenant_runtime::print_openapi(&settle::api::openapi());
    }
    let config = settle::Config::load().context("failed to load configuration")?;
    if std::env::args().any(|argument| argument == "--dump-config") {
        return provenant_runtime::print_config(&config);
    }
    if std::env::args().any(|argument| argument == "--migrate-only") {
        return Ok(settle::open_databases(&config).await?.close().await?);
    }
    let telemetry = provenant_telemetry::init("settle", &config.telemetry)?;
    let app = settle::Application::build(config).await?; // connect, declare streams, bind
    let outcome = app.run_until_stopped(provenant_runtime::shutdown_on(provenant_runtime::shutdown_signal())).await;
    telemetry.shutdown().await?; // flush spans before the pod goes away
    outcome
}
