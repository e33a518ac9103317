//! The leader lease (table `leader_lease`, one row) and the fence that makes a leader's writes conditional on
//! it. See `crate::leader` for the election that uses them, and docs/architecture.md for the protocol.
//!
//! Every time in the lease is the database's clock (`NOW_MS_*`), never a JobManager's: two JobManagers whose
//! clocks disagree still agree on whether the lease has expired.
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row;
use tokio::sync::watch;

use super::{from_ms, ms, Store, StoreError};

/// The database clock in ms since the Unix epoch, PostgreSQL (`clock_timestamp`, the time of the statement's
/// execution, not of its transaction's start).
const NOW_MS_POSTGRES: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
/// The same in SQLite.
const NOW_MS_SQLITE: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// The epoch this JobManager leads under (0: it does not lead), which [`Store::write`] checks every write
/// against, and the signal that a write found another epoch in the lease (this JobManager was deposed).
#[derive(Debug)]
pub struct Fence {
    epoch: AtomicU64,
    /// The newest epoch a refused write found in the lease (0 until one was refused).
    deposed: watch::Sender<u64>,
}

impl Default for Fence {
    fn default() -> Self {
        Fence { epoch: AtomicU64::new(0), deposed: watch::channel(0).0 }
    }
}

impl Fence {
    /// The epoch writes must find in the lease; 0 when this JobManager does not lead (every write is refused).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Sets the epoch writes must find (0: refuse every write).
    pub fn set(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// A write found `current` in the lease, not this JobManager's epoch.
    pub(super) fn deposed(&self, current: u64) {
        self.deposed.send_replace(current);
    }

    /// Wakes when a write is refused because the lease has another epoch.
    pub fn subscribe_deposed(&self) -> watch::Receiver<u64> {
        self.deposed.subscribe()
    }
}

/// The lease row as read, with the database's clock at the time of reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The current (or last) leader's epoch; 0 before any JobManager led.
    pub epoch: u64,
    /// The holder's instance id; empty when released.
    pub holder: String,
    /// The holder's REST address, as it advertises it.
    pub rest_address: String,
    /// The holder's RPC address, as it advertises it.
    pub rpc_address: String,
    /// When the holder took the lease (database clock, ms).
    pub acquired_ms: u64,
    /// When it ends unless renewed (database clock, ms).
    pub expires_ms: u64,
    /// The database clock when the row was read (ms).
    pub now_ms: u64,
}

impl LeaseRecord {
    /// Whether a JobManager holds the lease at `now_ms`.
    pub fn is_held(&self) -> bool {
        !self.holder.is_empty() && self.expires_ms >= self.now_ms
    }
}

impl Store {
    fn now_ms_sql(&self) -> &'static str {
        if self.postgres {
            NOW_MS_POSTGRES
        } else {
            NOW_MS_SQLITE
        }
    }

    /// Takes the lease if nobody else holds it (released, expired by the database clock, or held by `holder`
    /// itself, an earlier process on the same data directory): the epoch grows by one and the lease lasts
    /// `timeout_ms`. Returns the new epoch, or None when another JobManager holds it.
    pub async fn acquire_lease(
        &self,
        holder: &str,
        rest_address: &str,
        rpc_address: &str,
        timeout_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let now = self.now_ms_sql();
        let free = format!("holder = '' OR holder = $1 OR expires_ms < {now}");
        self.take_lease(holder, rest_address, rpc_address, timeout_ms, &free).await
    }

    /// Takes the lease whoever holds it (a SQLite store, which one JobManager uses at a time): the epoch grows by
    /// one. Returns the new epoch.
    pub async fn force_lease(
        &self,
        holder: &str,
        rest_address: &str,
        rpc_address: &str,
        timeout_ms: u64,
    ) -> Result<u64, StoreError> {
        let taken = self.take_lease(holder, rest_address, rpc_address, timeout_ms, "TRUE").await?;
        taken.ok_or_else(|| StoreError::Corrupt("the leader_lease row is missing".into()))
    }

    /// Takes the lease where `condition` (SQL over the lease row) holds; the new epoch, or None.
    async fn take_lease(
        &self,
        holder: &str,
        rest_address: &str,
        rpc_address: &str,
        timeout_ms: u64,
        condition: &str,
    ) -> Result<Option<u64>, StoreError> {
        let now = self.now_ms_sql();
        let sql = format!(
            "UPDATE leader_lease SET epoch = epoch + 1, holder = $1, rest_address = $2, rpc_address = $3, \
             acquired_ms = {now}, expires_ms = {now} + $4 WHERE id = 1 AND ({condition}) RETURNING epoch"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(holder.to_string())
            .bind(rest_address.to_string())
            .bind(rpc_address.to_string())
            .bind(ms(timeout_ms))
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(from_ms(row.try_get::<i64, _>(0)?))),
            None => Ok(None),
        }
    }

    /// Extends the lease `holder` holds under `epoch` by `timeout_ms` from now, even if it expired meanwhile as
    /// long as nobody took it (then nobody acted under a newer epoch). False: it is no longer theirs (another
    /// JobManager took it, or it was released).
    pub async fn renew_lease(&self, holder: &str, epoch: u64, timeout_ms: u64) -> Result<bool, StoreError> {
        let now = self.now_ms_sql();
        let sql =
            format!("UPDATE leader_lease SET expires_ms = {now} + $1 WHERE id = 1 AND epoch = $2 AND holder = $3");
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(timeout_ms))
            .bind(ms(epoch))
            .bind(holder.to_string())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives the lease up at once (a graceful stop), so that a standby takes over without waiting for it to
    /// expire. A no-op when it is no longer `holder`'s.
    pub async fn release_lease(&self, holder: &str, epoch: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE leader_lease SET holder = '', expires_ms = 0 WHERE id = 1 AND epoch = $1 AND holder = $2")
            .bind(ms(epoch))
            .bind(holder.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The lease as it is now.
    pub async fn lease(&self) -> Result<LeaseRecord, StoreError> {
        let sql = format!(
            "SELECT epoch, holder, rest_address, rpc_address, acquired_ms, expires_ms, {} FROM leader_lease \
             WHERE id = 1",
            self.now_ms_sql()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Err(StoreError::Corrupt("the leader_lease row is missing".into())) };
        Ok(LeaseRecord {
            epoch: from_ms(row.try_get(0)?),
            holder: row.try_get(1)?,
            rest_address: row.try_get(2)?,
            rpc_address: row.try_get(3)?,
            acquired_ms: from_ms(row.try_get(4)?),
            expires_ms: from_ms(row.try_get(5)?),
            now_ms: from_ms(row.try_get(6)?),
        })
    }
}
