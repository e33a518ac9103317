//! Leader election: which of the JobManagers sharing one metadata store drives the jobs.
//!
//! A JobManager leads while it holds the lease in the store (`store::lease`): a row with an epoch that only
//! grows, a holder, and an expiry on the database's clock. Every JobManager runs [`run_election`]:
//! - a **standby** tries to take the lease every renew interval; it succeeds once the lease is released (the
//!   leader stopped gracefully) or expired (the leader died or stalled for the lease timeout). Meanwhile it
//!   serves reads and `/health`, answers `/ready` with 503 and refuses TaskManagers' calls, so a load balancer
//!   sends users and TaskManagers to the leader;
//! - the **leader** renews the lease every renew interval and runs a *term*: the job actors, the heartbeat
//!   monitor and retention, all stopped together by the term's token. Its epoch is the fence of every store
//!   write (`Store::write`) and is sent with every call to a TaskManager. It steps down (ends the term, forgets
//!   its jobs and TaskManagers, becomes a standby) when a renewal says the lease is someone else's, when a
//!   write is refused by the fence. It does *not* step down merely because renewals fail (the database is
//!   out of reach): a standby that reaches the database then takes over, and from that moment every write of
//!   the old leader is refused by the fence and every call it makes by TaskManagers that follow the new one;
//!   while nobody reaches the database, stepping down would only stop jobs that can still finish (their end
//!   is recorded once the database is back). A renewal succeeds even after expiry if nobody took the lease;
//! - on shutdown, the leader ends its term and then releases the lease, so a standby takes over at once.
//!
//! A SQLite store serves one JobManager (a file lock, `Store::lock_sqlite`), which takes the lease at start
//! whatever it says: its holder can only be an earlier process on the same file, which is gone.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{Fence, LeaseRecord};
use crate::Context;

/// The default pause between two renewals of the lease by its leader (and two tries of a standby to take it).
pub const LEASE_RENEW_INTERVAL_DEFAULT: Duration = Duration::from_millis(1000);
/// The default life of the lease after a renewal: a leader that renews nothing for this long loses it, and a
/// standby takes over.
pub const LEASE_TIMEOUT_DEFAULT: Duration = Duration::from_millis(5000);
/// A lease timeout must hold this many renewals, so that one slow renewal does not cost the lead.
pub const RENEWALS_PER_LEASE_MIN: u32 = 3;
const _: () = assert!(
    LEASE_RENEW_INTERVAL_DEFAULT.as_millis() * RENEWALS_PER_LEASE_MIN as u128 <= LEASE_TIMEOUT_DEFAULT.as_millis()
);
/// How often a JobManager that steps down reports term tasks (job actors) that have not ended yet. They end at
/// their next await on the term's token; it does not stand by (and may not lead again) before they have.
const TERM_END_WAIT_MAX: Duration = Duration::from_secs(10);

/// The lease settings.
#[derive(Clone, Copy, Debug)]
pub struct LeaseSettings {
    /// Pause between renewals (leader) and between tries to take the lease (standby).
    pub renew_interval: Duration,
    /// Life of the lease after a renewal.
    pub timeout: Duration,
}

/// What a JobManager knows of the leadership.
#[derive(Clone, Debug, Default)]
pub struct LeaderState {
    /// This JobManager leads.
    pub leading: bool,
    /// Its epoch while it leads (0 otherwise).
    pub epoch: u64,
    /// When it took the lead (ms since the epoch, its clock).
    pub since_ms: u64,
    /// The lease as last read (a standby reads it at every try): who leads, at which addresses.
    pub lease: Option<LeaseRecord>,
}

/// The work of one term as leader: stopped together when the term ends.
struct Term {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Term {
    /// A term that has ended (a standby's): whatever is spawned into it stops at once.
    fn ended() -> Term {
        let stop = CancellationToken::new();
        stop.cancel();
        Term { stop, tasks: TaskTracker::new() }
    }
}

/// This JobManager's place in the election, shared by the REST handlers, the RPC service and the job actors.
pub struct Leadership {
    /// This JobManager's id in the lease: kept in the data directory, so that a JobManager restarted on the
    /// same directory takes back its own lease at once instead of waiting for it to expire.
    pub instance: String,
    /// The REST address others reach this JobManager at (written into the lease).
    pub rest_address: String,
    /// The RPC address TaskManagers reach this JobManager at (written into the lease).
    pub rpc_address: String,
    /// The epoch the store's writes are conditional on.
    pub fence: Arc<Fence>,
    state: watch::Sender<LeaderState>,
    term: Mutex<Term>,
}

impl Leadership {
    /// A standby with these addresses.
    pub fn new(instance: String, rest_address: String, rpc_address: String, fence: Arc<Fence>) -> Self {
        Leadership {
            instance,
            rest_address,
            rpc_address,
            fence,
            state: watch::channel(LeaderState::default()).0,
            term: Mutex::new(Term::ended()),
        }
    }

    /// Whether this JobManager leads now.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().leading
    }

    /// The leader epoch, while it leads (0 otherwise).
    pub fn epoch(&self) -> u64 {
        let state = self.state.borrow();
        if state.leading {
            state.epoch
        } else {
            0
        }
    }

    /// What this JobManager knows of the leadership.
    pub fn state(&self) -> LeaderState {
        self.state.borrow().clone()
    }

    fn term(&self) -> std::sync::MutexGuard<'_, Term> {
        self.term.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token that ends the current term (cancelled already on a standby).
    pub fn term_stop(&self) -> CancellationToken {
        self.term().stop.clone()
    }

    /// Runs `work` as part of the current term: `work` must end when [`Leadership::term_stop`] fires, and
    /// the term's end waits for it (bounded by [`TERM_END_WAIT_MAX`]).
    pub fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let term = self.term();
        term.tasks.spawn(work);
    }

    /// A leadership that leads under `epoch` from the start, with a live term: for unit tests of the parts that
    /// run only on a leader.
    #[cfg(test)]
    pub(crate) fn leading_for_tests(epoch: u64) -> Self {
        let fence = Arc::new(Fence::default());
        fence.set(epoch);
        let leadership = Leadership::new("test".into(), String::new(), String::new(), fence);
        *leadership.term() = Term { stop: CancellationToken::new(), tasks: TaskTracker::new() };
        leadership.state.send_modify(|state| {
            state.leading = true;
            state.epoch = epoch;
        });
        leadership
    }
}

/// The instance id kept in `<data-dir>/jobmanager.instance` (made on first use).
pub fn instance_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let path = data_dir.join("jobmanager.instance");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() && text.trim().len() <= 64 => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Takes part in the election until `shutdown`: a standby until it takes the lease, then the leader of a
/// term until it loses it, and so on. On shutdown a leader ends its term and releases the lease.
pub(crate) async fn run_election(
    ctx: Arc<Context>,
    settings: LeaseSettings,
    sqlite: bool,
    shutdown: CancellationToken,
) {
    let leadership = ctx.leadership.clone();
    let mut forced = sqlite;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let asked = Instant::now();
        let taken = if forced {
            ctx.store
                .force_lease(
                    &leadership.instance,
                    &leadership.rest_address,
                    &leadership.rpc_address,
                    millis(settings.timeout),
                )
                .await
                .map(Some)
        } else {
            ctx.store
                .acquire_lease(
                    &leadership.instance,
                    &leadership.rest_address,
                    &leadership.rpc_address,
                    millis(settings.timeout),
                )
                .await
        };
        match taken {
            Ok(Some(epoch)) => {
                forced = false;
                lead(&ctx, settings, epoch, asked, &shutdown).await;
                // A term that ended at once (its start failed) is not begun again in a tight loop.
            }
            Ok(None) => match ctx.store.lease().await {
                Ok(lease) => leadership.state.send_modify(|state| state.lease = Some(lease)),
                Err(e) => tracing::warn!(error = %e, "cannot read the leader lease"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot try to take the leader lease; trying again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.renew_interval) => {}
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Why a term ended.
#[derive(Debug)]
enum TermEnd {
    Shutdown,
    /// Another JobManager holds the lease now, or a write was fenced.
    Deposed(String),
    /// The start of the term (taking the jobs over) outlasted the lease.
    Expired(String),
}

/// Leads one term under `epoch` (taken by a request sent at `asked`) until it ends; then steps down.
async fn lead(ctx: &Arc<Context>, settings: LeaseSettings, epoch: u64, asked: Instant, shutdown: &CancellationToken) {
    let leadership = &ctx.leadership;
    let started = Instant::now();
    leadership.fence.set(epoch);
    let stop = shutdown.child_token();
    *leadership.term() = Term { stop: stop.clone(), tasks: TaskTracker::new() };
    ctx.metrics.is_leader.set(1);
    ctx.metrics.leader_epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
    ctx.metrics.leader_changes.inc();
    tracing::info!(epoch, instance = %leadership.instance, rest = %leadership.rest_address,
        rpc = %leadership.rpc_address, "took the leader lease: this JobManager leads");
    let mut deposed = leadership.fence.subscribe_deposed();
    deposed.mark_unchanged();
    // The term's work starts before this JobManager says it leads (and the RPC service accepts TaskManagers),
    // so that the jobs a registration reports on are known when it comes. Bounded by the lease: past it, the
    // lead may be gone.
    let setup = tokio::time::timeout_at(asked + settings.timeout, crate::job::recovery::start_term(ctx.clone()));
    let end = match setup.await {
        Err(_) => TermEnd::Expired("taking over the unfinished jobs took longer than the lease".into()),
        Ok(Err(e)) => TermEnd::Deposed(format!("cannot take over the unfinished jobs: {e}")),
        Ok(Ok(decisions)) => {
            leadership.state.send_modify(|state| {
                state.leading = true;
                state.epoch = epoch;
                state.since_ms = crate::cluster::now_ms();
                state.lease = None;
            });
            let jobs = decisions.len();
            let mut decided = std::pin::pin!(futures::future::join_all(decisions));
            let mut pending = jobs > 0;
            if !pending {
                ctx.metrics.takeover_duration.observe(started.elapsed().as_secs_f64());
            }
            let mut renewed_at = asked;
            let mut warned = false;
            loop {
                let deadline = renewed_at + settings.timeout;
                if !warned && Instant::now() >= deadline {
                    // The database is out of reach (a standby cannot take the lease either, unless it reaches the
                    // database and this JobManager does not). Leading on is safe: every write is fenced, and the
                    // next renewal that reaches the database says whether the lease is still this one's.
                    warned = true;
                    tracing::warn!(
                        epoch,
                        timeout_ms = settings.timeout.as_millis() as u64,
                        "no renewal of the leader lease succeeded for the lease timeout; a standby may take over, \
                         and then every write of this JobManager is refused"
                    );
                }
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break TermEnd::Shutdown,
                    _ = deposed.changed() => {
                        break TermEnd::Deposed(format!("a write found epoch {} in the lease", *deposed.borrow()))
                    }
                    _ = &mut decided, if pending => {
                        pending = false;
                        let took = started.elapsed();
                        ctx.metrics.takeover_duration.observe(took.as_secs_f64());
                        tracing::info!(epoch, jobs, duration_ms = took.as_millis() as u64,
                            "takeover done: every unfinished job adopted or redeployed");
                        continue;
                    }
                    _ = tokio::time::sleep(settings.renew_interval) => {}
                }
                let sent = Instant::now();
                let renewal = ctx.store.renew_lease(&leadership.instance, epoch, millis(settings.timeout));
                match tokio::time::timeout(settings.timeout, renewal).await {
                    Ok(Ok(true)) => {
                        renewed_at = sent;
                        warned = false;
                    }
                    Ok(Ok(false)) => break TermEnd::Deposed("the lease is no longer this JobManager's".into()),
                    Ok(Err(e)) => tracing::warn!(epoch, error = %e, "cannot renew the leader lease; trying again"),
                    Err(_) => {}
                }
            }
        }
    };
    // Step down: nothing of this term may act any more. The fence first, so that a write in flight is refused.
    leadership.fence.set(0);
    match &end {
        TermEnd::Shutdown => tracing::info!(epoch, "shutting down: ending the term, then releasing the lease"),
        TermEnd::Deposed(why) | TermEnd::Expired(why) => {
            tracing::warn!(epoch, reason = %why, "lost the leader lease: this JobManager steps down to standby");
        }
    }
    leadership.state.send_modify(|state| {
        state.leading = false;
        state.epoch = 0;
    });
    ctx.metrics.is_leader.set(0);
    ctx.metrics.leader_epoch.set(0);
    stop.cancel();
    let tasks = {
        let term = leadership.term();
        term.tasks.close();
        term.tasks.clone()
    };
    // A new term (this process may lead again) must not begin while work of this one still runs: it would act
    // under the new epoch. Each task ends at its next await on the term's token; one stuck longer is reported.
    while tokio::time::timeout(TERM_END_WAIT_MAX, tasks.wait()).await.is_err() {
        tracing::warn!(
            epoch,
            still_running = tasks.len(),
            "the term's tasks have not all ended; waiting before standing by"
        );
    }
    ctx.jobs.clear();
    ctx.cluster.clear();
    match end {
        TermEnd::Shutdown => match ctx.store.release_lease(&leadership.instance, epoch).await {
            Ok(()) => tracing::info!(epoch, "released the leader lease: a standby takes over at once"),
            Err(e) => tracing::warn!(epoch, error = %e, "cannot release the leader lease; it expires instead"),
        },
        TermEnd::Deposed(_) | TermEnd::Expired(_) => {
            tracing::info!(epoch, "stepped down: the term's work has stopped; standing by");
        }
    }
}
