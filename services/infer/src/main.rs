use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = infer::load_config().context("failed to load configuration")?;
    if std::env::args().any(|argument| argument == "--dump-config") {
        return provenant_runtime::print_config(&config);
    }
    if std::env::args().any(|argument| argument == "--dump-openapi") {
        return provenant_runtime::print_openapi(&infer::api::openapi());
    }
    let telemetry = provenant_telemetry::init("infer", &config.telemetry)?;
    let app = infer::Application::build(config).await?; // connect, declare streams, bind
    let outcome = app.run_until_stopped(provenant_runtime::shutdown_on(provenant_runtime::shutdown_signal())).await;
    telemetry.shutdown().await?; // flush spans before the pod goes away
    outcome
}
