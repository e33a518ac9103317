//! The `sluice-jobmanager` binary.
use clap::{CommandFactory, Parser};
use sluice_jobmanager::JobManagerConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_common::config::load_config_file_into_env(&JobManagerConfig::command())?;
    let config = JobManagerConfig::parse();
    sluice_common::process::init_logging(&config.log_format);
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        sluice_common::process::shutdown_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    let result = sluice_jobmanager::run(config, shutdown).await;
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    result
}
