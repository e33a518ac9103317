//! The Sluice JobManager: the control plane of a cluster.
//!
//! Map of the crate, in layers (a module uses only modules of the layers below it, and `lib.rs`, the
//! composition root, holds the [`Context`] every actor and handler shares):
//! - entry points: `rest` (the REST API and web UI, axum: handlers write *desired* state and wake job
//!   actors) and [`rpc`] (the gRPC service TaskManagers call: registration, heartbeats, task reports);
//! - [`job`]: one actor task per job that owns its lifecycle, one file per phase in `job/states/`;
//! - [`checkpoint`]: each job's checkpoint coordinator: trigger, completion, retention, restore, metadata;
//! - [`deployment`]: what runs where (tasks, their TaskManagers), shared by `job` and `checkpoint`;
//! - [`cluster`]: the TaskManager registry, heartbeat monitor and slots; [`scheduler`]: placement;
//! - [`task_manager_client`]: calls to TaskManagers, pooled, behind a trait; [`store`]: metadata in SQL;
//!   [`metrics`]: Prometheus metrics; [`config`]: flags, environment variables, config file.
//!
//! Lifecycles (job, checkpoint, task statuses) and the checkpoint storage layout come from
//! `sluice_common`, which the TaskManager shares.
//!
//! [`run`] binds the listeners, writes `<data-dir>/jobmanager.addr` with the addresses actually bound (so port
//! 0 works for tests and scripts), and serves until `shutdown` is cancelled.
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod deployment;
pub mod job;
pub mod leader;
pub mod metrics;
mod rest;
pub mod rpc;
pub mod scheduler;
pub mod security;
pub mod store;
pub mod task_manager_client;
#[cfg(test)]
mod test_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_common::bounds::GRPC_MESSAGE_BYTES_MAX;
use sluice_common::cluster_auth::ClusterCredentials;
use sluice_common::ids::JobId;
use sluice_common::job::ValidatedJob;
use sluice_common::proto::job_manager_service_server::JobManagerServiceServer;
use tokio_util::sync::CancellationToken;

pub use config::{JobManagerConfig, Settings};

use cluster::Cluster;
use job::actor::JobActor;
use job::{JobRegistry, JobShared};
use metrics::Metrics;
use store::{NewJob, Store};
use task_manager_client::{GrpcTaskManagerClient, TaskManagerClient};

/// How often the heartbeat monitor looks for silent TaskManagers, as a fraction of the heartbeat timeout:
/// a silent TaskManager is noticed at most a quarter of the timeout late.
pub(crate) const HEARTBEAT_CHECKS_PER_TIMEOUT: u32 = 4;
/// The shortest pause between two looks for silent TaskManagers, whatever the timeout: a look walks the
/// registry under its lock, so it must not spin.
pub(crate) const HEARTBEAT_CHECK_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Everything the REST handlers, the gRPC service and the job actors share.
pub(crate) struct Context {
    pub store: Store,
    pub cluster: Arc<Cluster>,
    pub jobs: JobRegistry,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Each job's checkpoints go to `<location>/<job id>/` (a local directory, `s3://` or `gs://`).
    pub checkpoint_storage: sluice_common::storage::Storage,
    /// Where savepoints go unless a request names a location.
    pub savepoint_storage: sluice_common::storage::Storage,
    /// What jobs may read, write and reach, and where savepoints may go.
    pub confinement: sluice_common::confine::Confinement,
    /// Whether this JobManager leads, and the term its job actors run in.
    pub leadership: Arc<leader::Leadership>,
    /// How the JobManager calls TaskManagers.
    pub task_managers: Arc<dyn TaskManagerClient>,
    /// The REST tokens accepted; `None` when REST authentication is off.
    pub rest_auth: Option<Arc<security::RestAuth>>,
    /// `--insecure`: with authentication off, requests addressed to any host name are answered (otherwise only
    /// loopback names, against DNS rebinding).
    pub rest_insecure: bool,
}

impl Context {
    /// Records a validated job in the store and starts its actor. Nothing is stored if this fails.
    /// With `restore`, the job's state starts from that checkpoint or savepoint.
    pub(crate) async fn start_job(
        self: &Arc<Self>,
        job: ValidatedJob,
        restore: Option<sluice_common::proto::RestoreSpec>,
    ) -> anyhow::Result<JobId> {
        let job_id = JobId(uuid::Uuid::new_v4().simple().to_string());
        let start_time_ms = cluster::now_ms();
        let new_job = NewJob {
            job_id: job_id.clone(),
            name: job.graph.name.clone(),
            graph_json: serde_json::to_string(&job.graph).context("cannot serialize the job graph")?,
            chains_json: serde_json::to_string(&job.chains).context("cannot serialize the chains")?,
            start_time_ms,
            submitted_restore_json: match &restore {
                Some(spec) => Some(serde_json::to_string(spec).context("cannot serialize the restore point")?),
                None => None,
            },
        };
        self.store.insert_job(&new_job).await?;
        if let Some(restore) = &restore {
            tracing::info!(job_id = %job_id, from = %restore.dir, checkpoint = restore.checkpoint_id, "restoring state");
        }
        let (shared, inbox) = JobShared::new(job_id.clone(), Arc::new(job), restore);
        self.jobs.insert(shared.clone());
        let actor = JobActor::new(self.clone(), shared, inbox);
        self.leadership.spawn(actor.run());
        tracing::info!(job_id = %job_id, name = %new_job.name, "job submitted");
        Ok(job_id)
    }
}

#[cfg(test)]
impl Context {
    /// A context for unit tests: a SQLite store and checkpoint directories under `dir`, default settings, and
    /// `task_managers` as the way to reach TaskManagers.
    pub(crate) async fn for_tests(dir: &std::path::Path, task_managers: Arc<dyn TaskManagerClient>) -> Arc<Context> {
        use clap::Parser;
        let config = JobManagerConfig::parse_from(["sluice-jobmanager", "--data-dir", &dir.display().to_string()]);
        let store = Store::open(&config.database_url()).await.unwrap_or_else(|e| panic!("store: {e}"));
        let settings = config.settings().unwrap_or_else(|e| panic!("{e}"));
        let open = |location: String| {
            sluice_common::storage::Storage::open(&location).unwrap_or_else(|e| panic!("{location}: {e}"))
        };
        let locations = [config.checkpoint_location(), config.savepoint_location()];
        let confinement = sluice_common::confine::Confinement::resolve(dir, &config.confinement, &locations)
            .unwrap_or_else(|e| panic!("{e}"));
        Arc::new(Context {
            store,
            cluster: Arc::new(Cluster::new(settings.heartbeat_timeout)),
            jobs: JobRegistry::default(),
            metrics: Metrics::new().unwrap_or_else(|e| panic!("{e}")),
            settings,
            checkpoint_storage: open(config.checkpoint_location()),
            savepoint_storage: open(config.savepoint_location()),
            confinement,
            leadership: Arc::new(leader::Leadership::leading_for_tests(1)),
            task_managers,
            rest_auth: None,
            rest_insecure: false,
        })
    }
}

/// The addresses a JobManager serves on, as bound.
#[derive(Clone, Copy, Debug)]
pub struct BoundAddresses {
    /// REST API and web UI.
    pub rest: SocketAddr,
    /// gRPC service for TaskManagers.
    pub rpc: SocketAddr,
}

/// Runs a JobManager until `shutdown` is cancelled.
/// How long the start-up probe of a storage location may take before it is reported as failed.
const STORAGE_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes, reads and deletes a probe object at `storage` and logs the outcome with the credentials used: an
/// operator sees a wrong bucket, a missing permission or an unreachable endpoint at start, not at the first
/// checkpoint.
async fn probe_storage(storage: sluice_common::storage::Storage, what: &'static str) {
    let location = storage.location();
    let credentials = storage.credentials_source();
    match tokio::time::timeout(STORAGE_PROBE_TIMEOUT, storage.probe()).await {
        Ok(Ok(())) => {
            tracing::info!(%location, credentials, "{what} storage works (a probe object was written, read and deleted)")
        }
        Ok(Err(e)) => tracing::error!(%location, credentials, error = %e,
            "{what} storage probe failed: checkpoints will fail and restores wait until it works"),
        Err(_) => tracing::error!(%location, credentials, timeout_s = STORAGE_PROBE_TIMEOUT.as_secs(),
            "{what} storage probe failed: no answer within the timeout"),
    }
}

pub async fn run(config: JobManagerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = config.settings().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let database_url = config.database_url();
    // Held until this function returns (the process ends): no second JobManager opens the same SQLite file.
    let single = Store::lock_sqlite(&database_url).map_err(anyhow::Error::msg)?;
    let fence = Arc::new(store::Fence::default());
    let store = Store::open(&database_url)
        .await
        .with_context(|| format!("cannot open the metadata store {database_url}"))?
        .fenced(fence.clone());
    let backend = store.backend_name().await.context("the metadata store")?;
    tracing::info!(backend = %backend, "metadata store open");
    let checkpoint_storage = sluice_common::storage::Storage::open(&config.checkpoint_location())
        .context("cannot open the checkpoint storage (CHECKPOINT_DIR / S3_CHECKPOINT_PATH)")?;
    let savepoint_storage = sluice_common::storage::Storage::open(&config.savepoint_location())
        .context("cannot open the savepoint storage (SAVEPOINT_DIR)")?;
    tracing::info!(checkpoints = %checkpoint_storage.location(), savepoints = %savepoint_storage.location(),
        "checkpoint storage");
    // Off the start-up path: a store that is down is logged (and jobs wait for it, see `job::restore_point`),
    // never a JobManager that does not start.
    tokio::spawn(probe_storage(checkpoint_storage.clone(), "checkpoint"));
    if savepoint_storage.location() != checkpoint_storage.location() {
        tokio::spawn(probe_storage(savepoint_storage.clone(), "savepoint"));
    }
    let rest_auth = security::RestAuth::from_args(&config.rest_auth, &config.data_dir)?.map(Arc::new);
    let cluster_credentials = Arc::new(
        ClusterCredentials::for_job_manager(&config.cluster_auth, &config.data_dir).context("the cluster secret")?,
    );
    let cluster = Arc::new(Cluster::new(settings.heartbeat_timeout));
    let tls = sluice_common::tls::Tls::from_args(&config.tls).context("TLS")?;
    let savepoint_locations = [checkpoint_storage.location(), savepoint_storage.location()];
    let confinement = sluice_common::confine::Confinement::from_args(&config.confinement, &savepoint_locations)
        .context("cannot resolve the allowed directories")?
        .protect(own_data(&config));

    let rest_listener = tokio::net::TcpListener::bind(&config.rest_addr)
        .await
        .with_context(|| format!("cannot bind the REST address {}", config.rest_addr))?;
    let rpc_listener = tokio::net::TcpListener::bind(&config.rpc_addr)
        .await
        .with_context(|| format!("cannot bind the RPC address {}", config.rpc_addr))?;
    let bound = BoundAddresses { rest: rest_listener.local_addr()?, rpc: rpc_listener.local_addr()? };
    security::check_bind_policy(&config.rest_auth, bound.rest)?;
    let advertised = |addr: SocketAddr| advertise(config.advertise_host.as_deref(), addr);
    let leadership = Arc::new(leader::Leadership::new(
        leader::instance_id(&config.data_dir)?,
        advertised(bound.rest),
        advertised(bound.rpc),
        fence,
    ));
    let ctx = Arc::new(Context {
        store,
        cluster: cluster.clone(),
        jobs: JobRegistry::default(),
        metrics: Metrics::new().context("cannot register the metrics")?,
        settings,
        checkpoint_storage,
        savepoint_storage,
        confinement,
        leadership: leadership.clone(),
        task_managers: Arc::new(GrpcTaskManagerClient::new(
            cluster_credentials.clone(),
            cluster,
            tls.clone(),
            leadership.clone(),
        )),
        rest_auth,
        rest_insecure: config.rest_auth.insecure,
    });
    tracing::info!("REST listening on {}", bound.rest);
    tracing::info!("RPC listening on {}", bound.rpc);
    write_address_file(&config, &bound, tls.is_some())?;

    // Standby until this JobManager takes the leader lease; then it drives the jobs (see `leader`).
    let election =
        tokio::spawn(leader::run_election(ctx.clone(), config.lease_settings(), single.is_some(), shutdown.clone()));

    let rest = {
        let app = rest::router(ctx.clone());
        let shutdown = shutdown.clone();
        let stopped = async move { shutdown.cancelled().await };
        match &tls {
            Some(tls) => {
                let listener = rest::TlsListener::new(rest_listener, tls.acceptor())?;
                tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stopped).await })
            }
            None => tokio::spawn(async move { axum::serve(rest_listener, app).with_graceful_shutdown(stopped).await }),
        }
    };
    let mut builder = rpc::limited_server();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.tonic_server()).context("TLS on the RPC port")?;
    }
    let rpc = {
        let refused = ctx.metrics.requests_refused.clone();
        let credentials = cluster_credentials.clone();
        let leadership = ctx.leadership.clone();
        let service = JobManagerServiceServer::new(rpc::JobManagerRpc::new(ctx.clone()))
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let service =
            tonic::service::interceptor::InterceptedService::new(service, move |request: tonic::Request<()>| {
                if let Err(refusal) = credentials.check(request.metadata()) {
                    refused.with_label_values(&["rpc", refusal.reason()]).inc();
                    return Err(refusal.status());
                }
                // A standby drives nothing: TaskManagers go to the leader (they try the next address).
                if !leadership.is_leader() {
                    return Err(rpc::not_the_leader(&leadership));
                }
                Ok(request)
            });
        let incoming = rpc::incoming(rpc_listener);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            builder
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
                .await
        })
    };

    let (rest_result, rpc_result) = tokio::join!(rest, rpc);
    shutdown.cancel();
    // The election ends the term (the job actors stop) and releases the lease.
    let _ = election.await;
    ctx.store.close().await;
    rest_result.context("the REST server task panicked")?.context("the REST server failed")?;
    rpc_result.context("the RPC server task panicked")?.context("the RPC server failed")?;
    tracing::info!("JobManager stopped");
    Ok(())
}

/// `addr` as others reach it: with `host` (ADVERTISE_HOST) when set, else loopback for an unspecified address.
fn advertise(host: Option<&str>, addr: SocketAddr) -> String {
    match host.map(str::trim).filter(|h| !h.is_empty()) {
        Some(host) if host.contains(':') && !host.starts_with('[') => format!("[{host}]:{}", addr.port()),
        Some(host) => format!("{host}:{}", addr.port()),
        None if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        None => addr.to_string(),
    }
}

/// Where this JobManager keeps what no job may read or write: its data directory (metadata, generated
/// secrets), checkpoints and savepoints, and its secret, token and key files.
fn own_data(config: &JobManagerConfig) -> Vec<std::path::PathBuf> {
    let files = [
        &config.cluster_auth.cluster_secret_file,
        &config.rest_auth.admin_token_file,
        &config.rest_auth.read_token_file,
        &config.tls.tls_key_file,
        &config.tls.tls_cert_file,
    ];
    [config.data_dir.clone(), config.checkpoint_location().into(), config.savepoint_location().into()]
        .into_iter()
        .chain(files.into_iter().flatten().cloned())
        .collect()
}

/// Writes `{"rest": ..., "rpc": ...}` to `<data-dir>/jobmanager.addr`, atomically (write then rename), so a
/// reader never sees half a file.
fn write_address_file(config: &JobManagerConfig, bound: &BoundAddresses, tls: bool) -> anyhow::Result<()> {
    let json =
        serde_json::json!({ "rest": advertise(None, bound.rest), "rpc": advertise(None, bound.rpc), "tls": tls });
    let path = config.data_dir.join("jobmanager.addr");
    let temporary = config.data_dir.join("jobmanager.addr.tmp");
    std::fs::write(&temporary, json.to_string()).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
