//! The TaskManager registry: who is alive, which slots are free, and who holds them.
//!
//! One `std::sync::Mutex` guards the whole registry. Every operation is short and never awaits while
//! holding it, so a lock is cheaper and simpler than an actor here; allocation is atomic because the
//! decision ([`crate::scheduler::choose_slots`]) and its application happen under one lock.
//!
//! Failure detection: each registration is an *incarnation*. A TaskManager that misses heartbeats for
//! `heartbeat_timeout` is marked LOST and its slots no longer count; one that registers again under the
//! same id (a restart) starts a new incarnation with fresh slots. A job holds slots of particular
//! incarnations, so it sees both cases the same way: an incarnation it depends on is gone, with a cause.
//! Every change bumps a `watch` counter that job actors wait on (a watch never blocks the sender and
//! never queues, so it needs no bound).
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_common::ids::JobId;
use sluice_common::proto::{Placement, RegisterTaskManagerRequest};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::scheduler::{choose_slots, FreeSlots, NotEnoughSlots};

pub use sluice_common::ids::TaskManagerId;

/// The most slots one TaskManager may offer. A larger number is refused at registration: it is surely a
/// misconfiguration, and each slot costs a little memory here.
pub const SLOTS_PER_TASK_MANAGER_MAX: u32 = 1024;

/// How many LOST TaskManagers stay listed (for the REST view). Beyond it, the longest-lost are forgotten.
pub const LOST_TASK_MANAGERS_RETAINED_MAX: usize = 256;

/// Whether a TaskManager is usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskManagerState {
    /// Heartbeating; its slots count.
    Active,
    /// No heartbeat within the timeout; its slots are gone. Carries the cause.
    Lost(String),
}

/// A registration that the registry refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// An empty id.
    #[error("task_manager_id must not be empty")]
    EmptyId,
    /// Missing addresses.
    #[error("TaskManager {0}: rpc_address and data_address must not be empty")]
    MissingAddress(String),
    /// A session too short to be unguessable.
    #[error("TaskManager {0}: the session must have at least {min} characters", min = sluice_common::secret::SECRET_CHARS_MIN)]
    Session(String),
    /// Slot count out of range.
    #[error("TaskManager {id}: slots must be in 1..={SLOTS_PER_TASK_MANAGER_MAX}, got {slots}")]
    Slots {
        /// The TaskManager.
        id: String,
        /// What it offered.
        slots: u32,
    },
}

/// One slot a job holds: on which incarnation of which TaskManager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldSlot {
    /// The TaskManager.
    pub task_manager: TaskManagerId,
    /// The registration the slot belongs to.
    pub incarnation: u64,
    /// Where to send DeployTasks/CancelTasks.
    pub rpc_address: String,
    /// Where other TaskManagers send this one data.
    pub data_address: String,
}

/// A read-only view of one TaskManager, for REST and metrics.
#[derive(Clone, Debug)]
pub struct TaskManagerView {
    /// Its id.
    pub id: TaskManagerId,
    /// Control address.
    pub rpc_address: String,
    /// Data address.
    pub data_address: String,
    /// Metrics address.
    pub metrics_address: String,
    /// Slots offered (0 once LOST).
    pub slots_total: u32,
    /// Slots no job holds (0 once LOST).
    pub slots_free: u32,
    /// Last heartbeat (or registration), ms since the epoch.
    pub last_heartbeat_ms: u64,
    /// ACTIVE or LOST.
    pub state: TaskManagerState,
    /// Whether it is leaving (draining): active, but no new slots go to it.
    pub leaving: bool,
    /// Its resident memory, as its last heartbeat said.
    pub memory_rss_bytes: Option<u64>,
}

/// A TaskManager a job held slots of that is lost, gone or restarted.
pub struct LostTaskManager {
    pub task_manager: TaskManagerId,
    pub cause: String,
    /// How long it had been silent when it was declared lost (zero when it left or restarted).
    pub silent_for: Duration,
}

struct TaskManagerEntry {
    incarnation: u64,
    /// This incarnation's session (see `sluice_common::cluster_auth`).
    session: String,
    rpc_address: String,
    data_address: String,
    metrics_address: String,
    /// Element i: the job holding slot i. Emptied when the TaskManager is lost.
    slots: Vec<Option<JobId>>,
    last_heartbeat: Instant,
    last_heartbeat_ms: u64,
    state: TaskManagerState,
    /// It said it is leaving: its slots are no longer offered, and jobs that hold some move off it.
    leaving: bool,
    memory_rss_bytes: Option<u64>,
    /// When it was declared LOST (meaningless while active).
    lost_at: Instant,
}

#[derive(Default)]
struct Registry {
    task_managers: HashMap<TaskManagerId, TaskManagerEntry>,
    next_incarnation: u64,
}

/// What a registration gets: its incarnation and its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Numbers registrations; a new one under the same id is a new incarnation.
    pub incarnation: u64,
    /// The session the TaskManager chose, which it and the JobManager send with their calls to each other.
    pub session: String,
}

/// The registry of TaskManagers and their slots.
pub struct Cluster {
    registry: Mutex<Registry>,
    /// Bumped on every change of registrations, liveness or free slots.
    changed: watch::Sender<u64>,
    heartbeat_timeout: Duration,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Cluster {
    /// An empty registry; TaskManagers silent for `heartbeat_timeout` are marked LOST by the monitor.
    pub fn new(heartbeat_timeout: Duration) -> Self {
        Cluster { registry: Mutex::new(Registry::default()), changed: watch::channel(0).0, heartbeat_timeout }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the registry consistent (every operation updates it in
        // one step), so a poisoned lock is safe to reuse.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// A receiver that wakes on every change of the registry.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Registers a TaskManager, replacing an earlier registration under the same id (a restart: the jobs
    /// holding the old incarnation's slots see it as lost).
    pub fn register(&self, request: &RegisterTaskManagerRequest) -> Result<Registration, RegisterError> {
        if request.task_manager_id.is_empty() {
            return Err(RegisterError::EmptyId);
        }
        if request.rpc_address.is_empty() || request.data_address.is_empty() {
            return Err(RegisterError::MissingAddress(request.task_manager_id.clone()));
        }
        if request.session.chars().count() < sluice_common::secret::SECRET_CHARS_MIN {
            return Err(RegisterError::Session(request.task_manager_id.clone()));
        }
        if request.slots == 0 || request.slots > SLOTS_PER_TASK_MANAGER_MAX {
            return Err(RegisterError::Slots { id: request.task_manager_id.clone(), slots: request.slots });
        }
        let session = request.session.clone();
        let incarnation = {
            let mut registry = self.lock();
            registry.next_incarnation += 1;
            let incarnation = registry.next_incarnation;
            let entry = TaskManagerEntry {
                incarnation,
                session: session.clone(),
                rpc_address: request.rpc_address.clone(),
                data_address: request.data_address.clone(),
                metrics_address: request.metrics_address.clone(),
                slots: vec![None; request.slots as usize],
                last_heartbeat: Instant::now(),
                last_heartbeat_ms: now_ms(),
                memory_rss_bytes: None,
                lost_at: Instant::now(),
                state: TaskManagerState::Active,
                leaving: false,
            };
            registry.task_managers.insert(TaskManagerId(request.task_manager_id.clone()), entry);
            incarnation
        };
        self.notify();
        Ok(Registration { incarnation, session })
    }

    /// The TaskManager, and its incarnation, whose live registration has `session`, if any.
    pub fn session_owner(&self, session: &str) -> Option<(TaskManagerId, u64)> {
        use subtle::ConstantTimeEq as _;
        let registry = self.lock();
        let mut owner = None;
        // Every entry is compared, in constant time, so timing tells nothing about the sessions.
        for (id, entry) in &registry.task_managers {
            if bool::from(entry.session.as_bytes().ct_eq(session.as_bytes())) && entry.state == TaskManagerState::Active
            {
                owner = Some((id.clone(), entry.incarnation));
            }
        }
        owner
    }

    /// The session of the active TaskManager serving RPC at `rpc_address`, for calls to it.
    pub fn session_at(&self, rpc_address: &str) -> Option<String> {
        let registry = self.lock();
        registry
            .task_managers
            .values()
            .filter(|entry| entry.rpc_address == rpc_address && entry.state == TaskManagerState::Active)
            .max_by_key(|entry| entry.incarnation)
            .map(|entry| entry.session.clone())
    }

    /// Records a heartbeat. False: the TaskManager is unknown or LOST and must register anew.
    pub fn heartbeat(&self, id: &TaskManagerId) -> bool {
        self.heartbeat_at(id, Instant::now())
    }

    /// [`Cluster::heartbeat`] received at `at` (tests pass their own clock).
    pub fn heartbeat_at(&self, id: &TaskManagerId, at: Instant) -> bool {
        let mut registry = self.lock();
        match registry.task_managers.get_mut(id) {
            Some(entry) if entry.state == TaskManagerState::Active => {
                entry.last_heartbeat = at;
                entry.last_heartbeat_ms = now_ms();
                true
            }
            Some(_) | None => false,
        }
    }

    /// Notes what a TaskManager's heartbeat said of its memory.
    pub fn note_memory(&self, id: &TaskManagerId, memory_rss_bytes: Option<u64>) {
        if let Some(entry) = self.lock().task_managers.get_mut(id) {
            entry.memory_rss_bytes = memory_rss_bytes;
        }
    }

    /// Marks LOST every active TaskManager silent for longer than the heartbeat timeout at `now`, and
    /// returns them with their causes.
    pub fn mark_silent_lost(&self, now: Instant) -> Vec<(TaskManagerId, String)> {
        let timeout_ms = self.heartbeat_timeout.as_millis();
        let lost: Vec<(TaskManagerId, String)> = {
            let mut registry = self.lock();
            let mut lost = Vec::new();
            for (id, entry) in registry.task_managers.iter_mut() {
                let silence = now.saturating_duration_since(entry.last_heartbeat);
                if entry.state == TaskManagerState::Active && silence > self.heartbeat_timeout {
                    let cause = format!("TaskManager {id} lost (no heartbeat for {timeout_ms} ms)");
                    entry.state = TaskManagerState::Lost(cause.clone());
                    entry.lost_at = now;
                    entry.slots.clear();
                    lost.push((id.clone(), cause));
                }
            }
            forget_oldest_lost(&mut registry);
            lost
        };
        if !lost.is_empty() {
            self.notify();
        }
        lost
    }

    /// Marks this incarnation of a TaskManager LOST at once, with `cause`: a call to it could not even
    /// connect, so its process is gone, and waiting for the heartbeat timeout would only delay recovery.
    /// Returns whether it was active until now.
    pub fn mark_unreachable(&self, slot: &HeldSlot, cause: &str) -> bool {
        let marked = {
            let mut registry = self.lock();
            let marked = match registry.task_managers.get_mut(&slot.task_manager) {
                Some(entry) if entry.incarnation == slot.incarnation && entry.state == TaskManagerState::Active => {
                    entry.state = TaskManagerState::Lost(format!("TaskManager {} lost ({cause})", slot.task_manager));
                    entry.lost_at = Instant::now();
                    entry.slots.clear();
                    true
                }
                _ => false,
            };
            forget_oldest_lost(&mut registry);
            marked
        };
        if marked {
            self.notify();
        }
        marked
    }

    /// The TaskManager `id`, in its incarnation `incarnation`, is leaving (`done`: it has left). Leaving: it stays
    /// active (its tasks run and report; heartbeats count) but offers no slot. Left: it is LOST at once, with a
    /// cause saying so. Returns how many of its slots jobs still hold (before it left) and whether this call
    /// changed its state, or None when that incarnation is not active (the TaskManager may exit at once).
    pub fn leave(&self, id: &TaskManagerId, incarnation: u64, done: bool) -> Option<(u32, bool)> {
        let (held, changed) = {
            let mut registry = self.lock();
            match registry.task_managers.get_mut(id) {
                Some(entry) if entry.incarnation == incarnation && entry.state == TaskManagerState::Active => {
                    let held = entry.slots.iter().filter(|s| s.is_some()).count() as u32;
                    let changed = !entry.leaving || done;
                    entry.leaving = true;
                    if done {
                        entry.state = TaskManagerState::Lost(format!("TaskManager {id} left the cluster"));
                        entry.lost_at = Instant::now();
                        entry.slots.clear();
                    }
                    (Some((held, changed)), changed)
                }
                _ => (None, false),
            }
        };
        if changed {
            self.notify();
        }
        held
    }

    /// The first TaskManager among these slots' that is leaving, if any.
    pub fn leaving_among(&self, slots: &[HeldSlot]) -> Option<TaskManagerId> {
        let registry = self.lock();
        slots.iter().find_map(|slot| match registry.task_managers.get(&slot.task_manager) {
            Some(entry) if entry.incarnation == slot.incarnation && entry.leaving => Some(slot.task_manager.clone()),
            _ => None,
        })
    }

    /// Atomically takes `needed` free slots for `job` with the given placement; element `j` is the job's
    /// slot `j`.
    pub fn allocate(&self, job: &JobId, needed: u32, placement: Placement) -> Result<Vec<HeldSlot>, NotEnoughSlots> {
        let held = {
            let mut registry = self.lock();
            let free: Vec<FreeSlots> = registry
                .task_managers
                .iter()
                .filter(|(_, entry)| entry.state == TaskManagerState::Active && !entry.leaving)
                .map(|(id, entry)| FreeSlots {
                    task_manager: id.clone(),
                    free: entry.slots.iter().filter(|s| s.is_none()).count() as u32,
                })
                .collect();
            let chosen = choose_slots(&free, needed, placement)?;
            let mut held = Vec::with_capacity(chosen.len());
            for id in chosen {
                let Some(entry) = registry.task_managers.get_mut(&id) else { continue };
                let Some(slot) = entry.slots.iter_mut().find(|s| s.is_none()) else { continue };
                *slot = Some(job.clone());
                held.push(HeldSlot {
                    task_manager: id,
                    incarnation: entry.incarnation,
                    rpc_address: entry.rpc_address.clone(),
                    data_address: entry.data_address.clone(),
                });
            }
            assert_eq!(held.len(), needed as usize, "allocated {} slots of {needed} chosen", held.len());
            held
        };
        self.notify();
        Ok(held)
    }

    /// Takes `count` free slots for `job` on one TaskManager, as registered under `incarnation` (the slots an
    /// adopted attempt's tasks run in). None, taking nothing, if it is not active under that incarnation or has
    /// fewer free slots.
    pub fn claim(
        &self,
        job: &JobId,
        task_manager: &TaskManagerId,
        incarnation: u64,
        count: u32,
    ) -> Option<Vec<HeldSlot>> {
        let held = {
            let mut registry = self.lock();
            let entry = registry.task_managers.get_mut(task_manager)?;
            let free = entry.slots.iter().filter(|s| s.is_none()).count();
            if entry.incarnation != incarnation || entry.state != TaskManagerState::Active || free < count as usize {
                return None;
            }
            let mut held = Vec::with_capacity(count as usize);
            for slot in entry.slots.iter_mut().filter(|s| s.is_none()).take(count as usize) {
                *slot = Some(job.clone());
                held.push(HeldSlot {
                    task_manager: task_manager.clone(),
                    incarnation,
                    rpc_address: entry.rpc_address.clone(),
                    data_address: entry.data_address.clone(),
                });
            }
            held
        };
        self.notify();
        Some(held)
    }

    /// Every slot `job` holds on an active TaskManager, one entry per slot.
    pub fn held_by(&self, job: &JobId) -> Vec<HeldSlot> {
        let registry = self.lock();
        let mut held = Vec::new();
        for (id, entry) in &registry.task_managers {
            if entry.state != TaskManagerState::Active {
                continue;
            }
            for _ in entry.slots.iter().filter(|s| s.as_ref() == Some(job)) {
                held.push(HeldSlot {
                    task_manager: id.clone(),
                    incarnation: entry.incarnation,
                    rpc_address: entry.rpc_address.clone(),
                    data_address: entry.data_address.clone(),
                });
            }
        }
        held
    }

    /// Whether the TaskManager is active under `incarnation`.
    pub fn is_registered(&self, task_manager: &TaskManagerId, incarnation: u64) -> bool {
        let registry = self.lock();
        registry
            .task_managers
            .get(task_manager)
            .is_some_and(|e| e.incarnation == incarnation && e.state == TaskManagerState::Active)
    }

    /// The RPC address of the TaskManager, if it is active under `incarnation`.
    pub fn rpc_address_of(&self, task_manager: &TaskManagerId, incarnation: u64) -> Option<String> {
        let registry = self.lock();
        registry
            .task_managers
            .get(task_manager)
            .filter(|e| e.incarnation == incarnation && e.state == TaskManagerState::Active)
            .map(|e| e.rpc_address.clone())
    }

    /// Forgets every TaskManager (this JobManager stepped down: they register with the next leader).
    pub fn clear(&self) {
        self.lock().task_managers.clear();
        self.notify();
    }

    /// Frees the slots `job` holds on one TaskManager.
    pub fn release_on(&self, job: &JobId, task_manager: &TaskManagerId) {
        {
            let mut registry = self.lock();
            if let Some(entry) = registry.task_managers.get_mut(task_manager) {
                for slot in entry.slots.iter_mut().filter(|s| s.as_ref() == Some(job)) {
                    *slot = None;
                }
            }
        }
        self.notify();
    }

    /// Frees every slot `job` holds.
    pub fn release(&self, job: &JobId) {
        {
            let mut registry = self.lock();
            for entry in registry.task_managers.values_mut() {
                for slot in entry.slots.iter_mut().filter(|s| s.as_ref() == Some(job)) {
                    *slot = None;
                }
            }
        }
        self.notify();
    }

    /// Why one of these slots is gone, if one is: its TaskManager was lost or registered anew.
    pub fn lost_cause(&self, slots: &[HeldSlot]) -> Option<String> {
        self.lost(slots).map(|lost| lost.cause)
    }

    /// The first TaskManager of `slots` that is lost, gone or restarted, with the cause and its silence.
    pub fn lost(&self, slots: &[HeldSlot]) -> Option<LostTaskManager> {
        let registry = self.lock();
        slots.iter().find_map(|slot| {
            let (cause, silent_for) = match registry.task_managers.get(&slot.task_manager) {
                None => (format!("TaskManager {} is gone", slot.task_manager), Duration::ZERO),
                Some(entry) if entry.incarnation != slot.incarnation => (
                    format!("TaskManager {} registered anew (restarted); its tasks are gone", slot.task_manager),
                    Duration::ZERO,
                ),
                Some(entry @ TaskManagerEntry { state: TaskManagerState::Lost(cause), .. }) => {
                    (cause.clone(), entry.lost_at.saturating_duration_since(entry.last_heartbeat))
                }
                Some(_) => return None,
            };
            Some(LostTaskManager { task_manager: slot.task_manager.clone(), cause, silent_for })
        })
    }

    /// Whether this incarnation of a TaskManager is still active.
    pub fn is_active(&self, slot: &HeldSlot) -> bool {
        let registry = self.lock();
        registry
            .task_managers
            .get(&slot.task_manager)
            .is_some_and(|e| e.incarnation == slot.incarnation && e.state == TaskManagerState::Active)
    }

    /// Free and total slots over active TaskManagers (a leaving one offers none: its free slots do not count).
    pub fn slot_counts(&self) -> (u32, u32) {
        let registry = self.lock();
        let active = registry.task_managers.values().filter(|e| e.state == TaskManagerState::Active);
        active.fold((0, 0), |(free, total), e| {
            let offered = if e.leaving { 0 } else { e.slots.iter().filter(|s| s.is_none()).count() as u32 };
            (free + offered, total + e.slots.len() as u32)
        })
    }

    /// Every known TaskManager, sorted by id.
    pub fn snapshot(&self) -> Vec<TaskManagerView> {
        let registry = self.lock();
        let mut views: Vec<TaskManagerView> = registry
            .task_managers
            .iter()
            .map(|(id, e)| TaskManagerView {
                id: id.clone(),
                rpc_address: e.rpc_address.clone(),
                data_address: e.data_address.clone(),
                metrics_address: e.metrics_address.clone(),
                slots_total: e.slots.len() as u32,
                slots_free: e.slots.iter().filter(|s| s.is_none()).count() as u32,
                last_heartbeat_ms: e.last_heartbeat_ms,
                state: e.state.clone(),
                leaving: e.leaving,
                memory_rss_bytes: e.memory_rss_bytes,
            })
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }
}

fn forget_oldest_lost(registry: &mut Registry) {
    let mut lost: Vec<(Instant, TaskManagerId)> = registry
        .task_managers
        .iter()
        .filter(|(_, e)| e.state != TaskManagerState::Active)
        .map(|(id, e)| (e.last_heartbeat, id.clone()))
        .collect();
    if lost.len() <= LOST_TASK_MANAGERS_RETAINED_MAX {
        return;
    }
    lost.sort();
    for (_, id) in lost.iter().take(lost.len() - LOST_TASK_MANAGERS_RETAINED_MAX) {
        registry.task_managers.remove(id);
    }
}

/// Marks silent TaskManagers LOST, checking every `check_interval`, until `shutdown`.
pub async fn run_heartbeat_monitor(
    cluster: Arc<Cluster>,
    check_interval: Duration,
    lost_counter: prometheus::IntCounter,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                for (id, cause) in cluster.mark_silent_lost(Instant::now()) {
                    tracing::warn!(task_manager = %id, %cause, "TaskManager lost");
                    lost_counter.inc();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, slots: u32) -> RegisterTaskManagerRequest {
        RegisterTaskManagerRequest {
            task_manager_id: id.into(),
            rpc_address: format!("127.0.0.1:1{id}"),
            data_address: format!("127.0.0.1:2{id}"),
            metrics_address: String::new(),
            slots,
            session: format!("session-of-task-manager-{id}"),
            running: Vec::new(),
        }
    }

    fn job(id: &str) -> JobId {
        JobId(id.into())
    }

    #[test]
    fn allocation_takes_slots_and_release_gives_them_back() {
        let cluster = Cluster::new(Duration::from_secs(5));
        assert!(cluster.register(&request("1", 2)).is_ok());
        assert!(cluster.register(&request("2", 2)).is_ok());
        let held = cluster.allocate(&job("j"), 3, Placement::Spread).unwrap_or_default();
        assert_eq!(held.len(), 3);
        assert_eq!(cluster.slot_counts(), (1, 4));
        assert_eq!(
            cluster.allocate(&job("k"), 2, Placement::Spread).err(),
            Some(NotEnoughSlots { needed: 2, available: 1 })
        );
        cluster.release(&job("j"));
        assert_eq!(cluster.slot_counts(), (4, 4));
    }

    #[test]
    fn registrations_with_bad_values_are_refused() {
        let cluster = Cluster::new(Duration::from_secs(5));
        assert_eq!(cluster.register(&request("", 1)), Err(RegisterError::EmptyId));
        assert!(matches!(cluster.register(&request("a", 0)), Err(RegisterError::Slots { .. })));
        assert!(matches!(
            cluster.register(&request("a", SLOTS_PER_TASK_MANAGER_MAX + 1)),
            Err(RegisterError::Slots { .. })
        ));
    }

    #[test]
    fn a_silent_task_manager_is_lost_and_its_jobs_see_the_cause() {
        let cluster = Cluster::new(Duration::from_millis(500));
        assert!(cluster.register(&request("1", 2)).is_ok());
        assert!(cluster.register(&request("2", 2)).is_ok());
        let held = cluster.allocate(&job("j"), 2, Placement::Spread).unwrap_or_default();
        assert_eq!(cluster.lost_cause(&held), None);

        // Both registered at or before t0; only TaskManager 1 speaks again.
        let t0 = Instant::now();
        assert!(cluster.heartbeat_at(&TaskManagerId("1".into()), t0 + Duration::from_millis(400)));
        assert_eq!(
            cluster.mark_silent_lost(t0 + Duration::from_millis(450)),
            vec![],
            "nobody is silent for 500 ms yet"
        );
        let lost = cluster.mark_silent_lost(t0 + Duration::from_millis(600));
        assert_eq!(lost, vec![(TaskManagerId("2".into()), "TaskManager 2 lost (no heartbeat for 500 ms)".to_string())]);
        assert_eq!(cluster.lost_cause(&held).as_deref(), Some("TaskManager 2 lost (no heartbeat for 500 ms)"));
        assert_eq!(cluster.slot_counts(), (1, 2), "the lost TaskManager's slots are removed");
        assert!(!cluster.heartbeat(&TaskManagerId("2".into())), "a lost TaskManager must register anew");
    }

    /// Goal: a leaving TaskManager keeps the slots jobs hold (their tasks run on until moved) but offers no
    /// new one, and once it has left, jobs still holding its slots see it as lost.
    #[test]
    fn a_leaving_task_manager_offers_no_slots_and_keeps_the_held_ones_until_it_left() {
        let cluster = Cluster::new(Duration::from_secs(5));
        let (Ok(one), Ok(_)) = (cluster.register(&request("1", 2)), cluster.register(&request("2", 2))) else {
            panic!("registrations refused")
        };
        let held = cluster.allocate(&job("j"), 2, Placement::Spread).unwrap_or_default();
        let tm1 = TaskManagerId("1".into());
        assert_eq!(cluster.leaving_among(&held), None);
        assert_eq!(cluster.leave(&tm1, one.incarnation + 7, false), None, "another incarnation is not the one leaving");
        assert_eq!(cluster.leave(&tm1, one.incarnation, false), Some((1, true)), "job j holds one of its slots");
        assert_eq!(cluster.leaving_among(&held), Some(tm1.clone()));
        assert_eq!(cluster.lost_cause(&held), None, "its tasks still run");
        assert!(held.iter().all(|slot| cluster.is_active(slot)));
        assert_eq!(cluster.slot_counts(), (1, 4), "only TaskManager 2's free slot is offered");
        assert_eq!(
            cluster.allocate(&job("k"), 2, Placement::Spread).err(),
            Some(NotEnoughSlots { needed: 2, available: 1 })
        );
        let moved = cluster.allocate(&job("k"), 1, Placement::Spread).unwrap_or_default();
        assert_eq!(moved.iter().map(|s| s.task_manager.0.as_str()).collect::<Vec<_>>(), ["2"]);
        assert!(cluster.heartbeat(&tm1), "a leaving TaskManager still heartbeats");
        cluster.release(&job("j"));
        assert_eq!(cluster.leave(&tm1, one.incarnation, false), Some((0, false)), "once j moved, none is held");
        assert_eq!(cluster.leave(&tm1, one.incarnation, true), Some((0, true)));
        assert_eq!(cluster.lost_cause(&held).as_deref(), Some("TaskManager 1 left the cluster"));
        assert_eq!(cluster.leave(&tm1, one.incarnation, true), None, "it left already");
    }

    #[test]
    fn registering_again_starts_a_new_incarnation_that_jobs_see_as_a_loss() {
        let cluster = Cluster::new(Duration::from_secs(5));
        assert!(cluster.register(&request("1", 1)).is_ok());
        let held = cluster.allocate(&job("j"), 1, Placement::Pack).unwrap_or_default();
        assert!(cluster.register(&request("1", 1)).is_ok());
        assert!(cluster.lost_cause(&held).is_some_and(|c| c.contains("registered anew")));
        assert_eq!(cluster.slot_counts(), (1, 1), "the new incarnation's slots are free");
    }
}
