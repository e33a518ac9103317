//! # sluice-taskmanager
//!
//! A TaskManager offers slots to the JobManager and runs the tasks deployed into them.
//!
//! ## Layout
//! - [`control`]: registration, heartbeats, and the deploy/cancel RPCs (on a small control runtime).
//! - [`heartbeat`]: what a heartbeat carries (a bounded share of task metrics, in turns) and what its answer
//!   or failure means (only "unknown TaskManager" or a whole timeout of silence cancels the tasks).
//! - [`task`]: one subtask of one chain: its channels ([`task::plan`]), its loop, barrier alignment
//!   ([`task::alignment`]), snapshots and restore, timers, time accounting, output routing.
//! - [`factory`]: builds the connector or operator of a vertex; the only module that knows them all.
//! - [`connectors`]: sources and sinks (Kafka, files, datagen, print, blackhole).
//! - [`operators`]: the vectorized transformations (select, filter, flat_map, aggregate, dedup, joins,
//!   windows) and native operators ([`operators::native`]: user Rust code with keyed state and timers, and
//!   their registry).
//! - [`operator_api`]: the traits every connector and operator implements, and their error.
//! - [`time`]: watermarks at sources and input gates, and the event-time buffer.
//! - [`checkpoint`]: snapshot files (writing, reading, incremental shared files) and checkpoint commands.
//! - [`state`]: keyed state backends (heap, RocksDB) and the typed states over them.
//! - [`network`]: the data port: one TCP connection per TaskManager pair, framing, credit-based flow
//!   control, and in-process channels with the same bounds.
//! - [`metrics`]: Prometheus metrics and the per-task counters heartbeats report.
//! - [`config`]: settings from flags, environment and config file.
//!
//! ## Layers
//! Imports between these modules point one way, from a layer to the ones below it; no two modules import
//! each other:
//!
//! ```text
//!   control   heartbeat                       registration, RPCs, what a heartbeat carries
//!   task                                      the task loop
//!   factory                                   vertex → implementation
//!   connectors   operators (native/ …)        implementations
//!   time                                      watermarks
//!   operator_api                              Operator, Source, OperatorError
//!   checkpoint   network   metrics            snapshot files, data port, counters
//!   state                                     keyed state backends
//!   config
//! ```
//!
//! (`time` needs only [`operator_api::OperatorError`]; `checkpoint` only `state`; `network` and `metrics`
//! nothing above `config`.)
//!
//! ```text
//!   JobManager ──gRPC──▶ control ──spawn──▶ task (data runtime)
//!                           ▲                 │ source/input gate → op → op → … → result partitions
//!                heartbeats │                 ▼
//!                           └──── metrics ◀── counters        network ◀──TCP──▶ other TaskManagers
//! ```
pub mod checkpoint;
pub mod config;
pub mod connectors;
pub mod control;
pub mod factory;
#[doc(hidden)]
pub mod fuzzing;
pub mod heartbeat;
pub mod metrics;
pub mod network;
pub mod operator_api;
pub mod operators;
pub mod state;
pub mod task;
pub mod time;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use config::TaskManagerConfig;
use control::{BoundAddresses, TaskManager, TaskManagerRpc, TaskServices};
use metrics::Metrics;
use network::{NetworkConfig, NetworkEnvironment};

/// Threads of the control runtime: gRPC, heartbeats and metrics need little CPU but must never wait for it.
const CONTROL_THREADS: usize = 2;

/// At shutdown, how long the data runtime's tasks get to stop before the process leaves them behind and
/// exits. Cancelled tasks stop at their next wait (milliseconds); what may still run is a snapshot being
/// written on a blocking thread, whose checkpoint is abandoned anyway. Five seconds lets a local write
/// finish without making a stuck upload hold the process up for long.
const DATA_RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole TaskManager process: reads the configuration (flags, environment, config file), starts the
/// runtimes, and runs until SIGINT or SIGTERM: the first leaves the cluster gracefully (the JobManager moves
/// the tasks elsewhere, bounded by `--drain-timeout-ms`), a second one stops at once. The stock binary passes an empty registry; a binary with
/// native operators passes its own:
///
/// ```no_run
/// fn main() -> anyhow::Result<()> {
///     let registry = sluice_taskmanager::operators::native::OperatorRegistry::new(); // .register("name", factory)
///     sluice_taskmanager::main_with_registry(registry)
/// }
/// ```
pub fn main_with_registry(registry: operators::native::OperatorRegistry) -> anyhow::Result<()> {
    // The whole configuration (flags > environment > config file > defaults) is read before any runtime or
    // thread starts.
    let loaded = sluice_common::config::load_with_config_file::<TaskManagerConfig>()?;
    let config = loaded.settings;
    if config.check_config {
        let problems = config.problems();
        std::process::exit(sluice_common::config::print_check(&loaded.effective, &problems));
    }
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
    let leave = CancellationToken::new();
    let data_handle = data_runtime.handle().clone();
    let result = control_runtime.block_on(async {
        let (signal_leave, signal_shutdown) = (leave.clone(), shutdown.clone());
        let mut signals = sluice_common::process::StopSignals::new();
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!("stop signal: leaving the cluster (a second signal stops at once)");
            signal_leave.cancel();
            signals.next().await;
            tracing::warn!("second stop signal: stopping at once");
            signal_shutdown.cancel();
        });
        run_with_registry(config, data_handle, Stop { leave, now: shutdown }, registry).await
    });
    data_runtime.shutdown_timeout(DATA_RUNTIME_SHUTDOWN_TIMEOUT);
    result
}

/// Runs a TaskManager without native operators until `shutdown` fires (at once, without leaving gracefully);
/// see [`run_with_registry`].
pub async fn run(
    config: TaskManagerConfig,
    data_runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = Stop { leave: CancellationToken::new(), now: shutdown };
    run_with_registry(config, data_runtime, stop, operators::native::OperatorRegistry::new()).await
}

/// When a TaskManager stops.
pub struct Stop {
    /// Leave the cluster gracefully ([`control::TaskManager::leave`]), then stop.
    pub leave: CancellationToken,
    /// Stop at once: tasks are cancelled, their jobs fail over.
    pub now: CancellationToken,
}

/// Runs a TaskManager offering the native operators of `registry` until it stops (see [`Stop`]). Network and
/// tasks live on `data_runtime`; the control plane on the runtime this future is polled on.
pub async fn run_with_registry(
    config: TaskManagerConfig,
    data_runtime: tokio::runtime::Handle,
    stop: Stop,
    registry: operators::native::OperatorRegistry,
) -> anyhow::Result<()> {
    let Stop { leave, now: shutdown } = stop;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let id = config.id.clone().unwrap_or_else(|| format!("tm-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let metrics = Metrics::new().context("cannot register metrics")?;
    let credentials = Arc::new(
        sluice_common::cluster_auth::ClusterCredentials::for_task_manager(&config.cluster_auth)
            .context("the cluster secret")?,
    );
    // What no job may read or write here: this TaskManager's data (state, spills) and its secret and key files.
    let own_data = [&config.cluster_auth.cluster_secret_file, &config.tls.tls_key_file, &config.tls.tls_cert_file];
    let confinement = sluice_common::confine::Confinement::from_args(&config.confinement, &[])
        .context("cannot resolve the allowed directories")?
        .protect(std::iter::once(config.data_dir.clone()).chain(own_data.into_iter().flatten().cloned()));
    let state = state::StateSettings::from_config(&config, Arc::new(confinement));

    let network_config = NetworkConfig {
        buffer_size_bytes: config.buffer_size as usize,
        credit_initial: config.credit_initial,
        floating_buffers: config.buffer_pool_size,
        output_queue_buffers: config.output_queue_buffers,
        max_frame_bytes: config.max_frame_bytes as usize,
        ..NetworkConfig::default()
    };
    let tls = sluice_common::tls::Tls::from_args(&config.tls).context("TLS")?;
    let (data_addr, local_id, hello_credentials, data_tls) =
        (config.data_addr.clone(), id.clone(), credentials.clone(), tls.clone());
    let network: Arc<NetworkEnvironment> = data_runtime
        .spawn(async move {
            NetworkEnvironment::start_with_credentials(
                &data_addr,
                local_id,
                network_config,
                hello_credentials,
                data_tls,
            )
            .await
        })
        .await
        .context("the data runtime stopped")?
        .with_context(|| format!("cannot bind the data port {}", config.data_addr))?;

    let rpc_listener = tokio::net::TcpListener::bind(&config.rpc_addr)
        .await
        .with_context(|| format!("cannot bind RPC address {}", config.rpc_addr))?;
    let metrics_listener = tokio::net::TcpListener::bind(&config.metrics_addr)
        .await
        .with_context(|| format!("cannot bind metrics address {}", config.metrics_addr))?;
    let advertise = |addr: SocketAddr| match &config.advertise_host {
        Some(host) => format!("{host}:{}", addr.port()),
        None if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        None => addr.to_string(),
    };
    let addresses = BoundAddresses {
        rpc: advertise(rpc_listener.local_addr()?),
        data: advertise(network.local_addr()),
        metrics: advertise(metrics_listener.local_addr()?),
    };
    tracing::info!(id = %id, rpc = %addresses.rpc, data = %addresses.data, metrics = %addresses.metrics, slots = config.slots, native_operators = ?registry.names(), "TaskManager listening");
    let address_file = config.data_dir.join("taskmanager.addr");
    let address_json =
        serde_json::json!({"id": id, "rpc": addresses.rpc, "data": addresses.data, "metrics": addresses.metrics});
    std::fs::write(&address_file, address_json.to_string())
        .with_context(|| format!("cannot write {}", address_file.display()))?;

    let task_manager = TaskManager::new(
        id,
        config.slots,
        &config.jobmanager,
        addresses,
        TaskServices {
            network: network.clone(),
            metrics: metrics.clone(),
            data_runtime,
            state,
            registry: Arc::new(registry),
            credentials: credentials.clone(),
            tls: tls.clone(),
        },
    )?;

    let metrics_app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                // Data connections refused at the handshake (no proof of membership, no TLS, garbage) are
                // counted by the network stack; the series follows its count.
                let refused = metrics.requests_refused.with_label_values(&["data", "handshake"]);
                refused.inc_by(network.stats().connections_refused.saturating_sub(refused.get()));
                std::future::ready(metrics.render())
            }),
        )
        .route(
            "/health",
            axum::routing::get(|| {
                std::future::ready(axum::Json(
                    serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
                ))
            }),
        );
    let metrics_shutdown = shutdown.clone();
    let metrics_server = tokio::spawn(async move {
        axum::serve(metrics_listener, metrics_app).with_graceful_shutdown(metrics_shutdown.cancelled_owned()).await
    });

    let registration = tokio::spawn(task_manager.clone().run_registration(shutdown.clone()));
    let leaver = task_manager.clone();
    let drain_timeout = std::time::Duration::from_millis(config.drain_timeout_ms);
    let drain_shutdown = shutdown.clone();
    let drain = tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = drain_shutdown.cancelled() => return None,
            _ = leave.cancelled() => {}
        }
        let outcome = leaver.leave(drain_timeout, &drain_shutdown).await;
        drain_shutdown.cancel();
        Some(outcome)
    });
    let rpc_shutdown = shutdown.clone();
    let gate = task_manager.clone();
    let mut server = control::limited_server();
    if let Some(tls) = &tls {
        server = server.tls_config(tls.tonic_server()).context("TLS on the RPC port")?;
    }
    server
        .add_service(tonic::service::interceptor::InterceptedService::new(
            // Explicit limits, not tonic's 4 MiB default: a deployment carries the whole job graph.
            sluice_common::proto::task_manager_service_server::TaskManagerServiceServer::new(TaskManagerRpc(
                task_manager,
            ))
            .max_decoding_message_size(sluice_common::bounds::GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(sluice_common::bounds::GRPC_MESSAGE_BYTES_MAX),
            move |request| gate.check_call(request),
        ))
        .serve_with_incoming_shutdown(control::incoming(rpc_listener), rpc_shutdown.cancelled_owned())
        .await
        .context("the RPC server failed")?;
    registration.abort();
    // The metrics server ends with the same shutdown signal; its own error is only worth a log line here.
    if let Ok(Err(e)) = metrics_server.await {
        tracing::warn!(error = %e, "the metrics server failed");
    }
    // A drain cut short (timeout, second signal) exits non-zero, so that a supervisor or a test tells it from one
    // that moved everything. Stopped without a drain, or drained: 0.
    // It ends promptly now: a drain is bounded and ends at shutdown; without one it returns at shutdown.
    match drain.await {
        Ok(Some(control::LeaveOutcome::Cut { tasks, slots_held })) => anyhow::bail!(
            "left the cluster with {tasks} tasks still running and {slots_held} slots still held (the drain was cut short)"
        ),
        Ok(Some(control::LeaveOutcome::NotHeard { cancelled })) if cancelled > 0 => {
            anyhow::bail!("the JobManager did not hear this TaskManager leave; {cancelled} tasks were cancelled")
        }
        _ => {}
    }
    Ok(())
}
