//! In-memory backend, for unit tests and throwaway daemons. Records go through the
//! codec like on disk so tests exercise the same encoding.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{
    ArtifactName, AuditLog, AuditRecord, Counters, EndReason, Ended, Error, Result, Retained,
    SessionHeader, SessionId, SessionStore, Timestamp, codec,
};

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, SessionHeader>,
    by_end_time: BTreeSet<(Timestamp, SessionId)>,
    events: HashMap<SessionId, Vec<Vec<u8>>>,
    counters: HashMap<SessionId, Counters>,
    artifacts: BTreeSet<([u8; 32], SessionId)>,
    names: BTreeSet<(ArtifactName, SessionId)>,
}

/// Both stores, kept in process memory.
#[derive(Default)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters more than losing the whole store, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(
        &self,
        id: SessionId,
        f: impl FnOnce(&mut SessionHeader, &mut BTreeSet<(Timestamp, SessionId)>),
    ) -> Option<SessionHeader> {
        let mut inner = self.lock();
        let Inner {
            sessions,
            by_end_time,
            ..
        } = &mut *inner;
        let header = sessions.get_mut(&id)?;
        f(header, by_end_time);
        Some(header.clone())
    }
}

#[async_trait]
impl SessionStore for MemoryStorage {
    async fn create(&self, header: &SessionHeader) -> Result<()> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(&header.id) {
            return Err(Error::AlreadyExists(header.id.to_string()));
        }
        inner.sessions.insert(header.id, header.clone());
        Ok(())
    }

    async fn get(&self, id: SessionId) -> Result<Option<SessionHeader>> {
        Ok(self.lock().sessions.get(&id).cloned())
    }

    async fn revoke(&self, id: SessionId, at: Timestamp) -> Result<Option<SessionHeader>> {
        Ok(self.update(id, |h, _| {
            h.revoked.get_or_insert(at);
        }))
    }

    async fn end(
        &self,
        id: SessionId,
        at: Timestamp,
        reason: EndReason,
    ) -> Result<Option<SessionHeader>> {
        Ok(self.update(id, |h, queue| {
            if h.ended.is_none() {
                h.revoked.get_or_insert(at);
                h.ended = Some(Ended { at, reason });
                queue.insert((at, id));
            }
        }))
    }

    async fn set_timeout(&self, id: SessionId, timeout_secs: u64) -> Result<Option<SessionHeader>> {
        Ok(self.update(id, |h, _| {
            if h.ended.is_none() {
                h.timeout_secs = timeout_secs;
            }
        }))
    }

    async fn list(&self) -> Result<Vec<SessionHeader>> {
        Ok(self.lock().sessions.values().cloned().collect())
    }

    async fn list_live(&self) -> Result<Vec<SessionHeader>> {
        let state = self.lock();
        let live = state.sessions.values().filter(|h| h.ended.is_none());
        Ok(live.cloned().collect())
    }

    async fn ended_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<SessionId>> {
        Ok(self
            .lock()
            .by_end_time
            .iter()
            .take_while(|(at, _)| *at < cutoff)
            .take(limit)
            .map(|(_, id)| *id)
            .collect())
    }

    async fn retained(&self) -> Result<Retained> {
        let inner = self.lock();
        Ok(Retained {
            count: inner.by_end_time.len() as u64,
            oldest_end: inner.by_end_time.first().map(|(at, _)| *at),
        })
    }

    async fn purge(&self, id: SessionId) -> Result<()> {
        let mut inner = self.lock();
        if let Some(h) = inner.sessions.remove(&id)
            && let Some(ended) = h.ended
        {
            inner.by_end_time.remove(&(ended.at, id));
        }
        Ok(())
    }

    async fn check_health(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemoryStorage {
    async fn append(&self, session: SessionId, record: AuditRecord) -> Result<u64> {
        let bytes = codec::encode(&record)?;
        let mut inner = self.lock();
        if let Some(sha) = record.artifact_sha256() {
            inner.artifacts.insert((sha, session));
        }
        if let Some(name) = record.artifact_name() {
            inner.names.insert((name, session));
        }
        inner.counters.entry(session).or_default().add(&record);
        let log = inner.events.entry(session).or_default();
        log.push(bytes);
        Ok(log.len() as u64 - 1)
    }

    async fn scan(&self, session: SessionId) -> Result<Vec<AuditRecord>> {
        let inner = self.lock();
        inner
            .events
            .get(&session)
            .map(|log| log.iter().map(|b| codec::decode(b)).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    async fn counters(&self, session: SessionId) -> Result<Counters> {
        Ok(self
            .lock()
            .counters
            .get(&session)
            .copied()
            .unwrap_or_default())
    }

    async fn delete(&self, session: SessionId) -> Result<()> {
        let mut inner = self.lock();
        inner.events.remove(&session);
        inner.counters.remove(&session);
        inner.artifacts.retain(|(_, s)| *s != session);
        inner.names.retain(|(_, s)| *s != session);
        Ok(())
    }

    async fn sessions_with_artifact(&self, sha256: [u8; 32]) -> Result<Vec<SessionId>> {
        let start = (sha256, SessionId::from_bytes([0; 16]));
        Ok(self
            .lock()
            .artifacts
            .range(start..)
            .take_while(|(sha, _)| *sha == sha256)
            .map(|(_, id)| *id)
            .collect())
    }

    async fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    async fn artifacts_named(
        &self,
        name: &str,
        version: &str,
        kind: Option<&str>,
    ) -> Result<Vec<([u8; 32], SessionId)>> {
        let mut out: Vec<_> = self
            .lock()
            .names
            .iter()
            .filter(|(a, _)| {
                a.name == name && a.version == version && kind.is_none_or(|k| a.kind == k)
            })
            .map(|(a, id)| (a.kind.clone(), a.sha256, *id))
            .collect();
        out.sort_unstable();
        Ok(out.into_iter().map(|(_, sha, id)| (sha, id)).collect())
    }
}
