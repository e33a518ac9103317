//! The network environment of one TaskManager: data port, connections, and the channel registry.
//!
//! The registry maps each [`ChannelKey`] to its sending state and to the gate that receives it. Both ends
//! derive the keys from the same deployment, so no ids are exchanged; a credit that arrives before the
//! partition exists creates the sending state lazily and waits there. Data for a key with no registered
//! receiver is stale (its execution was released, or never existed here): it is dropped and counted.
//!
//! Connections: for each peer a [`PeerSlot`] holds the current connection. The TaskManager whose id sorts
//! first dials (one dial at a time per peer, under `dial_lock`); the other waits for the slot to fill, at
//! most `connect_timeout`. A new connection from a peer replaces the old one (the peer restarted); the
//! channels of a closed connection fail.
use sluice_common::cluster_auth::ClusterCredentials;
use sluice_common::tls::Tls;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::buffer::{DataBuffer, Payload};
use super::channel::{announce, CreditTarget, Event, ReceiverSide, SenderChannel};
use super::connection::{self, Connection, FramedStream};
use super::error::Failure;
use super::frame::Frame;
use super::gate::{DeliverError, GateShared, Incoming, InputGate};
use super::partition::{ResultPartition, Subpartition};
use super::{lock, ChannelKey, NetworkConfig, NetworkError, NetworkStats, PeerAddress};

/// Connections that may be in their handshake at once. A connection beyond it is closed at once (and
/// logged): strangers cannot tie up more than this many tasks and hello buffers, each for at most
/// `connect_timeout`. Peers are few (one connection per TaskManager pair), so legitimate dials fit easily.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Released execution ids remembered so that their late credits are dropped instead of creating sending
/// state. The oldest is forgotten beyond it; a credit that late would only create an idle entry, which
/// [`MAX_SENDER_CHANNELS`] bounds.
pub const MAX_RELEASED_EXECUTIONS: usize = 4096;
/// Sending states the registry holds at most. A credit for an unknown channel beyond it is dropped and
/// counted as stale (with a warning); creating a partition beyond it fails. Far above what the slots of a
/// TaskManager can use (channels per subtask × subtasks).
pub const MAX_SENDER_CHANNELS: usize = 1 << 20;
/// Connections whose handshake is done that the accept loop keeps at once (peers dialing us). A connection
/// beyond it is closed right after its handshake and counted as refused: each may make this TaskManager
/// buffer up to `max_frame_bytes`, so strangers holding the secret (or any, without one) cannot grow its
/// memory by opening more. A TaskManager has one connection per peer TaskManager; 256 peers is a large
/// cluster for one job's exchange.
pub const MAX_ACCEPTED_CONNECTIONS: usize = 256;
/// How long an accepted connection may take to send its hello (TLS included), however long
/// `connect_timeout` is: a real peer sends its hello as soon as it is connected, so an idle stranger
/// holds one of the [`MAX_PENDING_HANDSHAKES`] places for this long at most.
pub const ACCEPT_HANDSHAKE_TIMEOUT_MAX: Duration = Duration::from_secs(3);
/// Sending states created by a credit (the receiving gate announced credit before the producing
/// partition exists here) that no partition has claimed yet. Beyond it, such credits are dropped and
/// counted as stale. Legitimately, a few per channel of the jobs being deployed.
pub const MAX_UNCLAIMED_SENDER_CHANNELS: usize = 65_536;
/// How long a sending state created by a credit waits for its partition before it is dropped (also when
/// its connection closes). Deployments of one attempt reach every TaskManager within seconds; a state
/// unclaimed for two minutes belongs to no task here (a stranger's credits, an attempt deployed elsewhere).
pub const UNCLAIMED_SENDER_TTL: Duration = Duration::from_secs(120);
const _: () = assert!(MAX_UNCLAIMED_SENDER_CHANNELS <= MAX_SENDER_CHANNELS);

/// First pause of the accept loop after an accept error (e.g. out of file descriptors), and the reset value
/// after a success; it doubles on each further error up to [`ACCEPT_ERROR_BACKOFF_MAX`], so a persistent
/// error does not spin. A millisecond: a transient error (a peer resetting mid-accept) costs almost nothing.
/// At most one WARN line about refused data connections per this interval; the others go to DEBUG, and all are
/// counted (`connections_refused`, exported as `sluice_requests_refused_total{transport="data"}`), so a stranger
/// cannot flood the log.
pub const REFUSED_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a refusal seen at `now` may be logged at WARN, given when the last one was; records it if so.
fn may_warn(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|last| now.duration_since(last) < REFUSED_WARN_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

const ACCEPT_ERROR_BACKOFF_MIN: Duration = Duration::from_millis(1);
/// Longest pause of the accept loop after an accept error; see [`ACCEPT_ERROR_BACKOFF_MIN`]. A second keeps
/// the data port answering soon after descriptors free up.
const ACCEPT_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(1);
const _: () = assert!(ACCEPT_ERROR_BACKOFF_MIN.as_millis() < ACCEPT_ERROR_BACKOFF_MAX.as_millis());

/// Environment-wide counters (relaxed atomics: they are statistics, not synchronization).
#[derive(Default)]
pub(crate) struct Counters {
    pub stale_frames_dropped: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_refused: AtomicU64,
    pub remote_bytes_in: AtomicU64,
    pub remote_bytes_out: AtomicU64,
}

/// The connection to one peer, and the lock that serializes dialing it.
struct PeerSlot {
    current: watch::Sender<Option<Arc<Connection>>>,
    dial_lock: tokio::sync::Mutex<()>,
}

impl PeerSlot {
    fn alive(&self) -> Option<Arc<Connection>> {
        self.current.borrow().as_ref().filter(|c| c.is_alive()).cloned()
    }
}

#[derive(Default)]
struct Registry {
    senders: HashMap<ChannelKey, Arc<SenderChannel>>,
    receivers: HashMap<ChannelKey, (Arc<GateShared>, usize)>,
    released: HashSet<u64>,
    released_order: VecDeque<u64>,
    /// Senders created by a credit and not yet claimed by a partition or a local gate, with when they were
    /// created. Invariant: every key here is in `senders`.
    unclaimed: HashMap<ChannelKey, Instant>,
    /// `unclaimed` in creation order, for expiry; entries claimed since are skipped.
    unclaimed_order: VecDeque<(Instant, ChannelKey)>,
}

impl Registry {
    fn check_not_released(&self, execution_id: u64) -> Result<(), NetworkError> {
        if self.released.contains(&execution_id) {
            return Err(NetworkError::ExecutionReleased { execution_id });
        }
        Ok(())
    }

    /// The sender of `key` for its partition (or local gate), created if need be: it is claimed.
    fn sender(&mut self, key: ChannelKey) -> Result<Arc<SenderChannel>, NetworkError> {
        self.check_not_released(key.execution_id)?;
        if let Some(sender) = self.senders.get(&key) {
            self.unclaimed.remove(&key);
            return Ok(sender.clone());
        }
        self.create_sender(key)
    }

    /// The sender a credit for `key` goes to: the existing one, or a new unclaimed one (see
    /// [`MAX_UNCLAIMED_SENDER_CHANNELS`] and [`UNCLAIMED_SENDER_TTL`]).
    fn sender_for_credit(&mut self, key: ChannelKey, now: Instant) -> Result<Arc<SenderChannel>, NetworkError> {
        self.check_not_released(key.execution_id)?;
        if let Some(sender) = self.senders.get(&key) {
            return Ok(sender.clone());
        }
        self.expire_unclaimed(now);
        if self.unclaimed.len() >= MAX_UNCLAIMED_SENDER_CHANNELS {
            return Err(NetworkError::InvalidConfig(format!(
                "more than {MAX_UNCLAIMED_SENDER_CHANNELS} channels were granted credit before their partition exists"
            )));
        }
        let sender = self.create_sender(key)?;
        self.unclaimed.insert(key, now);
        self.unclaimed_order.push_back((now, key));
        Ok(sender)
    }

    /// Drops the unclaimed senders older than [`UNCLAIMED_SENDER_TTL`].
    fn expire_unclaimed(&mut self, now: Instant) {
        while let Some(&(created, key)) = self.unclaimed_order.front() {
            if now.saturating_duration_since(created) < UNCLAIMED_SENDER_TTL {
                break;
            }
            self.unclaimed_order.pop_front();
            if self.unclaimed.get(&key) == Some(&created) {
                self.unclaimed.remove(&key);
                self.senders.remove(&key);
            }
        }
        // Claimed entries leave `unclaimed` but not the order; keep the order within a bound of its own.
        if self.unclaimed_order.len() > 2 * MAX_UNCLAIMED_SENDER_CHANNELS {
            let unclaimed = &self.unclaimed;
            self.unclaimed_order.retain(|(created, key)| unclaimed.get(key) == Some(created));
        }
    }

    /// Drops the unclaimed senders whose credits came over `connection_id` (it closed: they are void).
    fn drop_unclaimed_of(&mut self, connection_id: u64) {
        let senders = &self.senders;
        let void: Vec<ChannelKey> = self
            .unclaimed
            .keys()
            .filter(|key| senders.get(key).is_some_and(|s| s.uses_connection(connection_id)))
            .copied()
            .collect();
        for key in void {
            self.unclaimed.remove(&key);
            self.senders.remove(&key);
        }
    }

    fn create_sender(&mut self, key: ChannelKey) -> Result<Arc<SenderChannel>, NetworkError> {
        if self.senders.len() >= MAX_SENDER_CHANNELS {
            return Err(NetworkError::InvalidConfig(format!(
                "more than {MAX_SENDER_CHANNELS} output channels on one TaskManager"
            )));
        }
        let sender = SenderChannel::new(key);
        self.senders.insert(key, sender.clone());
        Ok(sender)
    }

    fn remember_released(&mut self, execution_id: u64) {
        if self.released.insert(execution_id) {
            self.released_order.push_back(execution_id);
        }
        while self.released_order.len() > MAX_RELEASED_EXECUTIONS {
            if let Some(oldest) = self.released_order.pop_front() {
                self.released.remove(&oldest);
            }
        }
    }
}

/// State shared by the environment, its connections, gates and partitions.
pub(crate) struct Shared {
    local_id: String,
    config: NetworkConfig,
    registry: std::sync::Mutex<Registry>,
    peers: std::sync::Mutex<HashMap<String, Arc<PeerSlot>>>,
    counters: Counters,
    next_connection_id: AtomicU64,
    /// What a hello proves membership of the cluster with.
    credentials: Arc<ClusterCredentials>,
    /// When a refused connection was last logged at WARN (see [`REFUSED_WARN_INTERVAL`]).
    refusal_warned_at: std::sync::Mutex<Option<Instant>>,
    /// TLS on every data connection, if on.
    tls: Option<Tls>,
    /// Cancelled when the environment is dropped: stops the accept loop and every connection.
    shutdown: CancellationToken,
}

impl Shared {
    fn security(&self) -> connection::Security<'_> {
        connection::Security { credentials: &self.credentials, tls: self.tls.as_ref() }
    }

    pub(crate) fn config(&self) -> &NetworkConfig {
        &self.config
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn peer_slot(&self, peer_id: &str) -> Arc<PeerSlot> {
        lock(&self.peers)
            .entry(peer_id.to_string())
            .or_insert_with(|| {
                Arc::new(PeerSlot { current: watch::Sender::new(None), dial_lock: tokio::sync::Mutex::new(()) })
            })
            .clone()
    }

    /// Whether [`MAX_ACCEPTED_CONNECTIONS`] other peers have a live connection, so one from `peer_id` (which
    /// would replace its own) is refused. Forgets the slots of peers with no connection that nobody waits
    /// on, so strangers' ids do not pile up.
    fn accepted_connections_full(&self, peer_id: &str) -> bool {
        let mut peers = lock(&self.peers);
        // Under the lock, a slot held only by the map cannot be handed out meanwhile.
        peers.retain(|_, slot| slot.alive().is_some() || Arc::strong_count(slot) > 1);
        let others = peers.iter().filter(|(id, slot)| id.as_str() != peer_id && slot.alive().is_some()).count();
        others >= MAX_ACCEPTED_CONNECTIONS
    }

    /// Whether this TaskManager is the one that dials `peer_id` (its id sorts first).
    fn dials(&self, peer_id: &str) -> bool {
        self.local_id.as_str() < peer_id
    }

    /// The connection to `peer`: dialed if our id sorts first, otherwise awaited (bounded).
    async fn connection_to(self: &Arc<Self>, peer: &PeerAddress) -> Result<Arc<Connection>, NetworkError> {
        let slot = self.peer_slot(&peer.task_manager_id);
        if let Some(connection) = slot.alive() {
            return Ok(connection);
        }
        let deadline = Instant::now() + self.config.connect_timeout;
        if self.dials(&peer.task_manager_id) {
            let _dialing = slot.dial_lock.lock().await;
            if let Some(connection) = slot.alive() {
                return Ok(connection);
            }
            let framed =
                connection::dial(&self.local_id, self.security(), peer, self.config.max_frame_bytes, deadline).await?;
            return Ok(self.install(&peer.task_manager_id, framed));
        }
        let mut receiver = slot.current.subscribe();
        let waited =
            tokio::time::timeout_at(deadline, receiver.wait_for(|c| c.as_ref().is_some_and(|c| c.is_alive()))).await;
        let timeout =
            || NetworkError::PeerTimeout { peer: peer.task_manager_id.clone(), waited: self.config.connect_timeout };
        match waited {
            Ok(Ok(current)) => current.clone().ok_or_else(timeout),
            // The sender lives in the slot we hold, so the channel cannot close; treat it like a timeout.
            Ok(Err(_)) | Err(_) => Err(timeout()),
        }
    }

    /// Starts a connection whose handshake is done and makes it the peer's current one.
    fn install(self: &Arc<Self>, peer_id: &str, framed: FramedStream) -> Arc<Connection> {
        let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let connection = connection::spawn(self, id, peer_id.to_string(), framed);
        self.counters.connections_opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(local = %self.local_id, peer = %peer_id, connection = id, "data connection established");
        let previous = self.peer_slot(peer_id).current.send_replace(Some(connection.clone()));
        if let Some(previous) = previous.filter(|c| c.is_alive()) {
            self.connection_closed(&previous, "replaced by a new connection from the same TaskManager");
        }
        connection
    }

    /// Closes `connection` (if not yet closed) and fails every channel that used it.
    pub(crate) fn connection_closed(&self, connection: &Arc<Connection>, reason: &str) {
        if !connection.is_alive() {
            // Already closed (by the connection's other task, or at shutdown): its channels were failed.
            return;
        }
        connection.close();
        if self.shutdown.is_cancelled() {
            return;
        }
        tracing::warn!(local = %self.local_id, peer = %connection.peer_id, connection = connection.id, reason, "data connection closed");
        let slot = self.peer_slot(&connection.peer_id);
        slot.current.send_if_modified(|current| {
            let same = current.as_ref().is_some_and(|c| c.id == connection.id);
            if same {
                *current = None;
            }
            same
        });
        let failure = Failure::ConnectionLost { peer: connection.peer_id.clone(), reason: reason.to_string() };
        let (senders, gates): (Vec<_>, Vec<_>) = {
            let mut registry = lock(&self.registry);
            registry.drop_unclaimed_of(connection.id);
            (
                registry.senders.values().cloned().collect(),
                registry.receivers.values().map(|(gate, _)| gate.clone()).collect(),
            )
        };
        for sender in senders.iter().filter(|s| s.uses_connection(connection.id)) {
            sender.fail(failure.clone());
        }
        // A gate whose channels on this connection all delivered end-of-partition lost nothing: it goes on.
        for gate in gates.iter().filter(|g| g.waits_on_connection(connection.id)) {
            gate.fail(failure.clone());
        }
    }

    /// Routes one frame from `connection`'s reader. An `Err` is a protocol violation and closes it.
    pub(crate) fn handle_frame(&self, connection: &Arc<Connection>, frame: Frame) -> Result<(), String> {
        let (key, item, backlog, bytes) = match frame {
            Frame::Hello { .. } => return Err("unexpected hello after the handshake".to_string()),
            Frame::Credit { channel, credits } => return self.on_credit(connection, channel, credits),
            Frame::Data { channel, backlog, ipc } => {
                let bytes = ipc.len();
                (channel, Incoming::Data(DataBuffer { bytes, payload: Payload::Ipc(ipc) }), backlog, bytes as u64)
            }
            Frame::Barrier { channel, checkpoint_id } => {
                (channel, Incoming::Event(Event::Barrier(checkpoint_id)), 0, 0)
            }
            Frame::Watermark { channel, timestamp_ms } => {
                (channel, Incoming::Event(Event::Watermark(timestamp_ms)), 0, 0)
            }
            Frame::EndOfPartition { channel } => (channel, Incoming::Event(Event::EndOfPartition), 0, 0),
            Frame::LatencyMarker { channel, emitted_ms } => {
                (channel, Incoming::Event(Event::LatencyMarker(emitted_ms)), 0, 0)
            }
        };
        self.counters.remote_bytes_in.fetch_add(bytes, Ordering::Relaxed);
        let receiver = lock(&self.registry).receivers.get(&key).cloned();
        let Some((gate, index)) = receiver else {
            self.counters.stale_frames_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(channel = %key, peer = %connection.peer_id, "dropped a frame for an unregistered channel");
            return Ok(());
        };
        match gate.deliver(index, item, backlog, Some(&connection.peer_id), bytes) {
            Ok(announcements) => announce(announcements, &self.counters),
            Err(DeliverError::Closed) => {
                self.counters.stale_frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(DeliverError::Violation(reason)) => {
                gate.fail(Failure::Protocol { key, reason: reason.clone() });
                return Err(reason);
            }
        }
        Ok(())
    }

    fn on_credit(&self, connection: &Arc<Connection>, key: ChannelKey, credits: u32) -> Result<(), String> {
        let sender = match lock(&self.registry).sender_for_credit(key, Instant::now()) {
            Ok(sender) => sender,
            Err(e) => {
                self.counters.stale_frames_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(channel = %key, peer = %connection.peer_id, error = %e, "dropped a credit");
                return Ok(());
            }
        };
        sender.add_credits(credits, Some(connection))?;
        announce(sender.pump(&self.counters), &self.counters);
        Ok(())
    }

    /// Removes the registrations of a dropped gate (only those still pointing at it).
    pub(crate) fn unregister_gate(&self, keys: &[ChannelKey], gate: &Arc<GateShared>) {
        let mut registry = lock(&self.registry);
        for key in keys {
            if registry.receivers.get(key).is_some_and(|(g, _)| Arc::ptr_eq(g, gate)) {
                registry.receivers.remove(key);
            }
        }
    }
}

/// The network stack of one TaskManager process. Dropping it stops the accept loop and closes every
/// connection.
pub struct NetworkEnvironment {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl NetworkEnvironment {
    /// Binds the data port (port 0 picks a free one) and spawns the accept loop; hellos carry and need no
    /// proof of membership (see [`NetworkEnvironment::start_with_credentials`]).
    pub async fn start(
        bind: &str,
        local_task_manager_id: String,
        config: NetworkConfig,
    ) -> Result<Arc<Self>, NetworkError> {
        Self::start_with_credentials(bind, local_task_manager_id, config, Arc::new(ClusterCredentials::none()), None)
            .await
    }

    /// [`NetworkEnvironment::start`] whose hellos prove membership of the cluster with `credentials` (and
    /// which refuses connections whose hello does not), over TLS when `tls` is given.
    pub async fn start_with_credentials(
        bind: &str,
        local_task_manager_id: String,
        config: NetworkConfig,
        credentials: Arc<ClusterCredentials>,
        tls: Option<Tls>,
    ) -> Result<Arc<Self>, NetworkError> {
        config.validate()?;
        if local_task_manager_id.is_empty() || local_task_manager_id.len() > super::frame::MAX_TASK_MANAGER_ID_BYTES {
            return Err(NetworkError::InvalidConfig(format!(
                "the TaskManager id must have 1 to {} bytes, '{local_task_manager_id}' has {}",
                super::frame::MAX_TASK_MANAGER_ID_BYTES,
                local_task_manager_id.len()
            )));
        }
        let listener =
            TcpListener::bind(bind).await.map_err(|source| NetworkError::Bind { address: bind.to_string(), source })?;
        let local_addr =
            listener.local_addr().map_err(|source| NetworkError::Bind { address: bind.to_string(), source })?;
        let shared = Arc::new(Shared {
            local_id: local_task_manager_id,
            config,
            registry: Default::default(),
            peers: Default::default(),
            counters: Counters::default(),
            next_connection_id: AtomicU64::new(1),
            credentials,
            refusal_warned_at: std::sync::Mutex::new(None),
            tls,
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(Arc::new(Self { shared, local_addr }))
    }

    /// The bound data port address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This TaskManager's id.
    pub fn local_task_manager_id(&self) -> &str {
        &self.shared.local_id
    }

    /// The configuration in force.
    pub fn config(&self) -> &NetworkConfig {
        &self.shared.config
    }

    /// The input gate of one subtask: `channels[i]` is input channel `i`, sent by the TaskManager named in
    /// its peer address (a channel from this TaskManager skips the socket). Waits (at most
    /// `connect_timeout`) for the connections it needs, then announces every channel's exclusive credits.
    pub async fn create_input_gate(&self, channels: Vec<(ChannelKey, PeerAddress)>) -> Result<InputGate, NetworkError> {
        let peers: Vec<(ChannelKey, String)> =
            channels.iter().map(|(key, peer)| (*key, peer.task_manager_id.clone())).collect();
        let gate = InputGate::new(self.shared.clone(), &peers);
        {
            let mut registry = lock(&self.shared.registry);
            for (key, _) in &channels {
                registry.check_not_released(key.execution_id)?;
                if registry.receivers.contains_key(key) || channels.iter().filter(|(k, _)| k == key).count() > 1 {
                    return Err(NetworkError::ChannelInUse { key: *key });
                }
            }
            for (index, (key, _)) in channels.iter().enumerate() {
                registry.receivers.insert(*key, (gate.shared().clone(), index));
            }
        }
        // From here on, an early return drops `gate`, which unregisters the channels again.
        for (index, (key, peer)) in channels.iter().enumerate() {
            let target = if peer.task_manager_id == self.shared.local_id {
                let sender = lock(&self.shared.registry).sender(*key)?;
                sender.connect_local(gate.shared().clone(), index)?;
                CreditTarget::Local(sender)
            } else {
                CreditTarget::Remote { connection: self.shared.connection_to(peer).await?, key: *key }
            };
            gate.set_credit_target(index, target);
        }
        gate.start();
        Ok(gate)
    }

    /// The result partition of one subtask: `subpartitions[j]` is output channel `j`, received by the
    /// TaskManager named in its peer address. Dials (at most `connect_timeout`) the peers whose ids sort after
    /// ours; never waits for a peer to dial us: such channels bind to the connection their first credit
    /// arrives on, so the producer can run, and even finish, before its consumers are deployed.
    pub async fn create_result_partition(
        &self,
        subpartitions: Vec<(ChannelKey, PeerAddress)>,
        buffer_timeout: Duration,
    ) -> Result<ResultPartition, NetworkError> {
        let remote_bytes_out = Arc::new(AtomicU64::new(0));
        let mut outputs = Vec::with_capacity(subpartitions.len());
        for (key, peer) in &subpartitions {
            let remote = peer.task_manager_id != self.shared.local_id;
            let receiver = if !remote {
                ReceiverSide::Local
            } else if self.shared.dials(&peer.task_manager_id) {
                // The peer waits for us to dial: the connection must exist for its gate to grant credit.
                ReceiverSide::Remote {
                    peer_id: peer.task_manager_id.clone(),
                    connection: Some(self.shared.connection_to(peer).await?),
                }
            } else {
                // The peer dials us when its gate needs the connection; the first credit binds the channel.
                // Waiting here would make a producer depend on its consumer's deployment.
                ReceiverSide::Remote { peer_id: peer.task_manager_id.clone(), connection: None }
            };
            let sender = lock(&self.shared.registry).sender(*key)?;
            sender.attach(receiver, remote_bytes_out.clone())?;
            // Credits may have arrived before this partition existed; nothing is queued yet, so there is
            // nothing to pump.
            outputs.push(Subpartition::new(sender, remote));
        }
        Ok(ResultPartition::new(self.shared.clone(), outputs, buffer_timeout, remote_bytes_out))
    }

    /// Drops every channel of `execution_id`, in both directions: waiting producers and consumers get
    /// [`NetworkError::ExecutionReleased`], queued buffers are freed, and later frames of the execution are
    /// dropped and counted as stale. Gates and partitions created for it afterwards are refused.
    pub fn release_execution(&self, execution_id: u64) {
        let (senders, gates) = {
            let mut registry = lock(&self.shared.registry);
            registry.remember_released(execution_id);
            let sender_keys: Vec<ChannelKey> =
                registry.senders.keys().filter(|k| k.execution_id == execution_id).copied().collect();
            for key in &sender_keys {
                registry.unclaimed.remove(key);
            }
            let senders: Vec<_> = sender_keys.iter().filter_map(|k| registry.senders.remove(k)).collect();
            let receiver_keys: Vec<ChannelKey> =
                registry.receivers.keys().filter(|k| k.execution_id == execution_id).copied().collect();
            let gates: Vec<_> =
                receiver_keys.iter().filter_map(|k| registry.receivers.remove(k)).map(|(gate, _)| gate).collect();
            (senders, gates)
        };
        tracing::debug!(execution_id, senders = senders.len(), receivers = gates.len(), "released execution");
        let failure = Failure::Released { execution_id };
        for sender in senders {
            sender.fail(failure.clone());
        }
        for gate in gates {
            gate.fail(failure.clone());
        }
    }

    /// A snapshot of the environment's counters.
    pub fn stats(&self) -> NetworkStats {
        let counters = &self.shared.counters;
        let connections = lock(&self.shared.peers).values().filter(|slot| slot.alive().is_some()).count();
        let sender_channels = lock(&self.shared.registry).senders.len();
        NetworkStats {
            connections,
            sender_channels,
            connections_opened: counters.connections_opened.load(Ordering::Relaxed),
            connections_refused: counters.connections_refused.load(Ordering::Relaxed),
            stale_frames_dropped: counters.stale_frames_dropped.load(Ordering::Relaxed),
            protocol_errors: counters.protocol_errors.load(Ordering::Relaxed),
            remote_bytes_in: counters.remote_bytes_in.load(Ordering::Relaxed),
            remote_bytes_out: counters.remote_bytes_out.load(Ordering::Relaxed),
        }
    }
}

impl Drop for NetworkEnvironment {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// Accepts data connections until shutdown; each handshake runs in its own task, at most
/// [`MAX_PENDING_HANDSHAKES`] at a time.
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut backoff = ACCEPT_ERROR_BACKOFF_MIN;
    // Runs until shutdown, by design: it is the data port.
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_ERROR_BACKOFF_MIN;
                accepted
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "accepting a data connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_ERROR_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%address, limit = MAX_PENDING_HANDSHAKES, "refused a data connection: too many pending handshakes");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = Instant::now() + shared.config.connect_timeout.min(ACCEPT_HANDSHAKE_TIMEOUT_MAX);
            let handshake = tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                handshake = connection::accept(stream, &shared.local_id, shared.security(), shared.config.max_frame_bytes, deadline) => handshake,
            };
            let handshake = handshake.and_then(|(peer_id, framed)| match shared.accepted_connections_full(&peer_id) {
                false => Ok((peer_id, framed)),
                true => Err(format!(
                    "{peer_id} completed its handshake, but {MAX_ACCEPTED_CONNECTIONS} accepted connections are open"
                )),
            });
            match handshake {
                Ok((peer_id, framed)) => {
                    shared.install(&peer_id, framed);
                }
                Err(reason) => {
                    let refused = shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if may_warn(&mut lock(&shared.refusal_warned_at), Instant::now()) {
                        tracing::warn!(%address, reason, refused_so_far = refused,
                            "refused a data connection (more within 10 s are logged at debug only)");
                    } else {
                        tracing::debug!(%address, reason, "refused a data connection");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod refusal_log_tests {
    use super::*;

    #[test]
    fn refusals_are_warned_at_most_once_per_interval() {
        let start = Instant::now();
        let mut last = None;
        assert!(may_warn(&mut last, start));
        assert!(!may_warn(&mut last, start + REFUSED_WARN_INTERVAL / 2));
        assert!(!may_warn(&mut last, start + REFUSED_WARN_INTERVAL - Duration::from_millis(1)));
        assert!(may_warn(&mut last, start + REFUSED_WARN_INTERVAL));
        assert!(!may_warn(&mut last, start + REFUSED_WARN_INTERVAL + Duration::from_secs(1)));
    }
}
