//! The `sluice-taskmanager` binary.
use anyhow::Context;
use clap::{CommandFactory, Parser};
use sluice_taskmanager::TaskManagerConfig;
use tokio_util::sync::CancellationToken;

/// Threads of the control runtime: gRPC, heartbeats and metrics need little CPU but must never wait for it.
const CONTROL_THREADS: usize = 2;

fn main() -> anyhow::Result<()> {
    // Before any thread starts: the config file is applied through environment variables.
    sluice_common::config::load_config_file_into_env(&TaskManagerConfig::command())?;
    let config = TaskManagerConfig::parse();
    sluice_common::process::init_logging(&config.log_format);

    let data_threads =
        config.data_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let data_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(data_threads.max(1))
        .thread_name("sluice-data")
        .enable_all()
        .build()
        .context("cannot start the data runtime")?;
    let control_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CONTROL_THREADS)
        .thread_name("sluice-control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;

    let shutdown = CancellationToken::new();
    let data_handle = data_runtime.handle().clone();
    let result = control_runtime.block_on(async {
        let signal = shutdown.clone();
        tokio::spawn(async move {
            sluice_common::process::shutdown_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        });
        sluice_taskmanager::run(config, data_handle, shutdown).await
    });
    data_runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}
