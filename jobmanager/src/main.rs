//! The `sluice-jobmanager` binary.
use sluice_jobmanager::JobManagerConfig;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    // The whole configuration (flags > environment > config file > defaults) is read before any runtime or
    // thread starts.
    let loaded = sluice_common::config::load_with_config_file::<JobManagerConfig>()?;
    let config = loaded.settings;
    if config.check_config {
        let problems = config.problems();
        std::process::exit(sluice_common::config::print_check(&loaded.effective, &problems));
    }
    sluice_common::process::init_logging(&config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
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
    })
}
