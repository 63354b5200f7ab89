//! The two storage interfaces the daemon programs against.

use async_trait::async_trait;

use crate::{
    AuditRecord, Counters, EndReason, NodeId, Result, Retained, SessionHeader, SessionId, Timestamp,
};

/// Sessions and their token hashes.
///
/// Every method that changes a session is atomic per session and durable when it
/// returns. Methods taking an id return `Ok(None)` when no such session is stored.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session; [`crate::Error::AlreadyExists`] if the id is taken.
    async fn create(&self, header: &SessionHeader) -> Result<()>;

    /// Reads one session.
    async fn get(&self, id: SessionId) -> Result<Option<SessionHeader>>;

    /// Reads one session to authenticate a proxy request. A backend shared between
    /// nodes may answer from a cache of live sessions that is at most a second old and
    /// that every change to the session, on any node, evicts.
    async fn get_for_auth(&self, id: SessionId) -> Result<Option<SessionHeader>> {
        self.get(id).await
    }

    /// Marks the session revoked at `at`, unless it already is (then nothing changes).
    async fn revoke(&self, id: SessionId, at: Timestamp) -> Result<Option<SessionHeader>>;

    /// Ends the session at `at` (revoking it too if it was not), unless it already ended.
    /// Ended sessions join the retention queue ordered by end time.
    async fn end(
        &self,
        id: SessionId,
        at: Timestamp,
        reason: EndReason,
    ) -> Result<Option<SessionHeader>>;

    /// Sets the time to live of a session that has not ended; an ended one is returned
    /// unchanged.
    async fn set_timeout(&self, id: SessionId, timeout_secs: u64) -> Result<Option<SessionHeader>>;

    /// Every stored session, in no particular order.
    async fn list(&self) -> Result<Vec<SessionHeader>>;

    /// Every session that has not ended (active, revoked, or past its timeout and
    /// waiting for the reaper), in no particular order. Its cost follows the live
    /// sessions, not the ended ones kept for the retention period, so the reaper and
    /// `/status` can ask every second.
    async fn list_live(&self) -> Result<Vec<SessionHeader>>;

    /// Up to `limit` sessions that ended strictly before `cutoff`, oldest first.
    async fn ended_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<SessionId>>;

    /// How many ended sessions the retention queue holds, and the oldest end time.
    async fn retained(&self) -> Result<Retained>;

    /// Removes a session (header and retention-queue entry) for good.
    async fn purge(&self, id: SessionId) -> Result<()>;

    /// Whether the store can serve requests now.
    async fn check_health(&self) -> Result<()>;
}

/// The per-session audit log.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends a record to the session's log and returns its sequence number once the
    /// record is durable. Records of one session are numbered 0, 1, 2, ...
    async fn append(&self, session: SessionId, record: AuditRecord) -> Result<u64>;

    /// The session's records in append order.
    async fn scan(&self, session: SessionId) -> Result<Vec<AuditRecord>>;

    /// How many downloads and denials the session has recorded.
    async fn counters(&self, session: SessionId) -> Result<Counters>;

    /// Deletes the session's records and its entries in the artifact index.
    async fn delete(&self, session: SessionId) -> Result<()>;

    /// Sessions whose records include a body with this sha256, in id order.
    async fn sessions_with_artifact(&self, sha256: [u8; 32]) -> Result<Vec<SessionId>>;

    /// Whether records can be appended now (an error says why not).
    async fn check_writable(&self) -> Result<()>;

    /// The (sha256, session) pairs of bodies an inspector named `name` at `version`
    /// (and, if given, of type `kind`), in (type, sha256, session) order.
    async fn artifacts_named(
        &self,
        name: &str,
        version: &str,
        kind: Option<&str>,
    ) -> Result<Vec<([u8; 32], SessionId)>>;
}

/// Which nodes of an HA pair served each session, kept beside the shared session store
/// so that any node can tell whose audit logs a report must gather.
#[async_trait]
pub trait NodeSets: Send + Sync + 'static {
    /// Adds `node` to the session's set; harmless if it is there already. Does nothing
    /// for a session that is not stored.
    async fn join(&self, id: SessionId, node: &NodeId) -> Result<()>;

    /// Takes `node` out of the session's set once it has deleted its own records of
    /// the session; returns how many nodes are left in the set.
    async fn leave(&self, id: SessionId, node: &NodeId) -> Result<usize>;

    /// The session's set, in name order; empty for an unknown session.
    async fn members(&self, id: SessionId) -> Result<Vec<NodeId>>;
}
