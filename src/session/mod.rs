//! Sessions: creation with validated parameters, the lifecycle active → revoked → ended
//! (and expired, the instant the timeout passes), and the per-session spool directory.
//!
//! This module decides what a session's state is and which transitions are allowed;
//! the stores only keep what it decides. It never sees HTTP.

pub mod expiry;
pub mod membership;
pub mod token;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fetchgate_storage::{
    AuditLog, EndReason, Policy, SecretRule, SessionHeader, SessionId, SessionStore, Timestamp,
};
use rand::Rng;

use crate::config::SessionConfig;
use crate::telemetry::metric;
use membership::Membership;
pub use token::Token;

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The token works.
    Active,
    /// The token was revoked; the report can be read.
    Revoked,
    /// Ended by `DELETE /session/{id}`.
    Ended,
    /// Its timeout passed (whether or not the reaper has ended it yet).
    Expired,
}

impl State {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Revoked => "revoked",
            State::Ended => "ended",
            State::Expired => "expired",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [State::Active, State::Revoked, State::Ended, State::Expired]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    /// Whether the session has not ended, by request or by expiry.
    pub const fn is_live(self) -> bool {
        matches!(self, State::Active | State::Revoked)
    }
}

/// The state of `h` at `now`. Expiry is decided here, at the instant the timeout
/// passes, not when the reaper gets round to it.
pub fn state(h: &SessionHeader, now: Timestamp) -> State {
    match h.ended {
        Some(e) if e.reason == EndReason::Ended => State::Ended,
        Some(_) => State::Expired,
        None if now >= h.expires_at() => State::Expired,
        None if h.revoked.is_some() => State::Revoked,
        None => State::Active,
    }
}

/// A secret as given at session creation.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SecretSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(rename = "basic-credentials")]
    pub basic_credentials: Option<String>,
}

/// What a client asks for when creating a session.
#[derive(Debug, Default)]
pub struct NewSession {
    pub policy: Option<String>,
    pub timeout_secs: Option<u64>,
    pub secrets: Vec<SecretSpec>,
    pub inspectors_configuration: Option<String>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Bounds on a session's owner and labels: they are kept with every session and shown
/// in every listing, so they stay small.
pub mod limits {
    /// Longest owner, label key and label value, in bytes.
    pub const MAX_OWNER: usize = 128;
    pub const MAX_LABEL_KEY: usize = 64;
    pub const MAX_LABEL_VALUE: usize = 256;
    /// Most labels on one session.
    pub const MAX_LABELS: usize = 32;
}

/// Checks an owner: 1 to [`limits::MAX_OWNER`] printable characters.
fn validate_owner(owner: &str) -> Result<(), String> {
    if owner.is_empty() || owner.len() > limits::MAX_OWNER {
        return Err(format!("owner must be 1 to {} bytes", limits::MAX_OWNER));
    }
    if owner.chars().any(char::is_control) {
        return Err("owner may not contain control characters".into());
    }
    Ok(())
}

/// Checks labels: at most [`limits::MAX_LABELS`]; keys of 1 to [`limits::MAX_LABEL_KEY`]
/// characters out of `[A-Za-z0-9._/-]` (so `label=key=value` filters parse), values
/// of at most [`limits::MAX_LABEL_VALUE`] bytes without control characters.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > limits::MAX_LABELS {
        return Err(format!("at most {} labels", limits::MAX_LABELS));
    }
    for (k, v) in labels {
        let key_ok = (1..=limits::MAX_LABEL_KEY).contains(&k.len())
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/'));
        if !key_ok {
            return Err(format!(
                "label key {k:?}: 1 to {} characters out of letters, digits and . _ - /",
                limits::MAX_LABEL_KEY
            ));
        }
        if v.len() > limits::MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(format!(
                "label {k:?}: the value must be at most {} bytes without control characters",
                limits::MAX_LABEL_VALUE
            ));
        }
    }
    Ok(())
}

/// Why a session operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("unknown session {0}")]
    NotFound(SessionId),
    #[error("session {0} has ended")]
    Gone(SessionId),
    #[error("wrong token for session {0}")]
    WrongToken(SessionId),
    #[error("unknown policy {0:?}: use \"strict\" or \"permissive\"")]
    UnknownPolicy(String),
    #[error("permissive sessions are not allowed: the daemon runs without --permissive-mode")]
    PermissiveNotAllowed,
    #[error("timeout must be between 1 and {max} seconds, got {got}")]
    InvalidTimeout { got: u64, max: u64 },
    #[error("{0}")]
    InvalidOwnerOrLabels(String),
    #[error("secret #{index}: {reason}")]
    InvalidSecret { index: usize, reason: String },
    #[error("session {0} is still active: revoke its token first")]
    StillActive(SessionId),
    #[error("session {id} is {state}")]
    WrongState { id: SessionId, state: &'static str },
    #[error(transparent)]
    Storage(#[from] fetchgate_storage::Error),
}

/// How a session stopped serving requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Revoked,
    Ended,
    Expired,
}

impl Finish {
    /// The wire name (`revoked`, `ended`, `expired`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Finish::Revoked => "revoked",
            Finish::Ended => "ended",
            Finish::Expired => "expired",
        }
    }
}

/// Told of a session that will serve no more requests, as it is now, and how.
type FinishedHook = Box<dyn Fn(&SessionHeader, Finish) + Send + Sync>;

/// The session service shared by the control API, the proxy and the background tasks.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    log: Arc<dyn AuditLog>,
    spool: PathBuf,
    config: SessionConfig,
    permissive_mode: bool,
    created_since_start: AtomicU64,
    /// In an HA pair: this node's place in the sessions' node sets.
    membership: Option<Membership>,
    /// Called when this node stops serving a session (see `on_finished`).
    finished: std::sync::RwLock<Vec<FinishedHook>>,
}

impl Sessions {
    /// A service over the given stores.
    pub fn new(
        store: Arc<dyn SessionStore>,
        log: Arc<dyn AuditLog>,
        spool: PathBuf,
        config: SessionConfig,
        permissive_mode: bool,
    ) -> Self {
        Sessions {
            store,
            log,
            spool,
            config,
            permissive_mode,
            created_since_start: AtomicU64::new(0),
            membership: None,
            finished: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// Calls `hook` with a session when this node revokes its token, ends it or expires
    /// it: from then on it serves no new request (in-flight downloads finish).
    pub fn on_finished(&self, hook: impl Fn(&SessionHeader, Finish) + Send + Sync + 'static) {
        self.finished
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
    }

    fn finished(&self, h: &SessionHeader, how: Finish) {
        for hook in self
            .finished
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            hook(h, how);
        }
    }

    /// The same service, recording which node serves each session.
    pub fn with_membership(mut self, membership: Membership) -> Self {
        self.membership = Some(membership);
        self
    }

    /// This node's membership, in an HA pair.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// The session store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The audit log.
    pub fn log(&self) -> &Arc<dyn AuditLog> {
        &self.log
    }

    /// Sessions created since this process started.
    pub fn created_since_start(&self) -> u64 {
        self.created_since_start.load(Ordering::Relaxed)
    }

    /// The session's spool directory (artifact copies, temporary files).
    pub fn spool_path(&self, id: SessionId) -> PathBuf {
        self.spool.join(id.to_string())
    }

    /// The spool root.
    pub fn spool_root(&self) -> &Path {
        &self.spool
    }

    /// Validates the request, stores a new session and returns it with its token.
    pub async fn create(&self, req: NewSession) -> Result<(SessionHeader, Token), SessionError> {
        let policy = match req.policy.as_deref() {
            None | Some("strict") => Policy::Strict,
            Some("permissive") if self.permissive_mode => Policy::Permissive,
            Some("permissive") => return Err(SessionError::PermissiveNotAllowed),
            Some(other) => return Err(SessionError::UnknownPolicy(other.to_owned())),
        };
        let timeout_secs = req.timeout_secs.unwrap_or(self.config.default_timeout_secs);
        self.check_timeout(timeout_secs)?;
        let secrets = req
            .secrets
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                validate_secret(s).map_err(|reason| SessionError::InvalidSecret { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;

        if let Some(owner) = &req.owner {
            validate_owner(owner).map_err(SessionError::InvalidOwnerOrLabels)?;
        }
        validate_labels(&req.labels).map_err(SessionError::InvalidOwnerOrLabels)?;

        let token = Token::generate();
        let header = SessionHeader {
            secrets,
            inspectors_configuration: req.inspectors_configuration,
            owner: req.owner,
            labels: req.labels,
            ..SessionHeader::new(
                new_session_id(),
                token.hash(),
                policy,
                Timestamp::now(),
                timeout_secs,
            )
        };
        self.store.create(&header).await?;
        self.created_since_start.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(metric::SESSIONS_CREATED, "policy" => policy.as_str()).increment(1);
        Ok((header, token))
    }

    /// Reads a session, `NotFound` if there is none.
    pub async fn get(&self, id: SessionId) -> Result<SessionHeader, SessionError> {
        self.store.get(id).await?.ok_or(SessionError::NotFound(id))
    }

    /// Checks proxy credentials: the session exists, `token` is its token (compared in
    /// constant time) and the session is active now. `WrongState` means the credentials
    /// were right but the session was revoked, ended or expired.
    pub async fn authorize(
        &self,
        id: SessionId,
        token: &str,
    ) -> Result<SessionHeader, SessionError> {
        let h = self.get_for_auth(id).await?;
        if !token::verify(token, &h.token_hash) {
            return Err(SessionError::WrongToken(id));
        }
        self.serve(h).await
    }

    /// Re-checks a session authenticated earlier on the same connection, so that a
    /// revocation takes effect on the very next request.
    pub async fn check_active(&self, id: SessionId) -> Result<SessionHeader, SessionError> {
        self.serve(self.get_for_auth(id).await?).await
    }

    /// Reads a session for proxy authentication (see
    /// [`SessionStore::get_for_auth`]), `NotFound` if there is none.
    async fn get_for_auth(&self, id: SessionId) -> Result<SessionHeader, SessionError> {
        self.store
            .get_for_auth(id)
            .await?
            .ok_or(SessionError::NotFound(id))
    }

    /// Admits a request of an active session, this node having joined its node set.
    async fn serve(&self, h: SessionHeader) -> Result<SessionHeader, SessionError> {
        let h = Self::require_active(h)?;
        if let Some(m) = &self.membership {
            m.join(h.id).await?;
        }
        Ok(h)
    }

    fn require_active(h: SessionHeader) -> Result<SessionHeader, SessionError> {
        match state(&h, Timestamp::now()) {
            State::Active => Ok(h),
            st => Err(SessionError::WrongState {
                id: h.id,
                state: st.as_str(),
            }),
        }
    }

    /// Revokes the token, given the token itself. Revoking twice is harmless.
    pub async fn revoke(&self, id: SessionId, token: &str) -> Result<SessionHeader, SessionError> {
        let h = self.get(id).await?;
        if !token::verify(token, &h.token_hash) {
            return Err(SessionError::WrongToken(id));
        }
        if h.revoked.is_some() {
            return Ok(h);
        }
        let h = self
            .store
            .revoke(id, Timestamp::now())
            .await?
            .ok_or(SessionError::NotFound(id))?;
        tracing::info!(session = %id, "token revoked");
        self.finished(&h, Finish::Revoked);
        Ok(h)
    }

    /// Ends a session that has not ended; revoking first is not required.
    pub async fn end(&self, id: SessionId) -> Result<SessionHeader, SessionError> {
        let h = self.get(id).await?;
        if state(&h, Timestamp::now()) == State::Ended {
            return Err(SessionError::Gone(id));
        }
        let h = self
            .store
            .end(id, Timestamp::now(), EndReason::Ended)
            .await?
            .ok_or(SessionError::NotFound(id))?;
        metrics::counter!(metric::SESSIONS_ENDED, "reason" => "ended").increment(1);
        tracing::info!(session = %id, "session ended");
        self.finished(&h, Finish::Ended);
        Ok(h)
    }

    /// Ends a session whose timeout has passed, as of its expiry time.
    pub async fn expire(&self, h: &SessionHeader) -> Result<(), SessionError> {
        let ended = self
            .store
            .end(h.id, h.expires_at(), EndReason::Expired)
            .await?;
        metrics::counter!(metric::SESSIONS_ENDED, "reason" => "expired").increment(1);
        tracing::info!(session = %h.id, "session expired");
        self.finished(ended.as_ref().unwrap_or(h), Finish::Expired);
        Ok(())
    }

    /// Changes the time to live of a live session (counted from creation).
    pub async fn set_timeout(
        &self,
        id: SessionId,
        timeout_secs: u64,
    ) -> Result<SessionHeader, SessionError> {
        self.check_timeout(timeout_secs)?;
        let h = self.get(id).await?;
        let st = state(&h, Timestamp::now());
        if !st.is_live() {
            return Err(SessionError::WrongState {
                id,
                state: st.as_str(),
            });
        }
        self.store
            .set_timeout(id, timeout_secs)
            .await?
            .ok_or(SessionError::NotFound(id))
    }

    /// Deletes the session's spool files. Allowed once the session has ended or expired,
    /// and for sessions that no longer exist.
    pub async fn delete_resources(&self, id: SessionId) -> Result<(), SessionError> {
        if let Some(h) = self.store.get(id).await? {
            let st = state(&h, Timestamp::now());
            if st.is_live() {
                return Err(SessionError::WrongState {
                    id,
                    state: st.as_str(),
                });
            }
        }
        remove_dir(&self.spool_path(id)).await
    }

    fn check_timeout(&self, secs: u64) -> Result<(), SessionError> {
        let max = self.config.max_timeout_secs;
        if secs == 0 || secs > max {
            return Err(SessionError::InvalidTimeout { got: secs, max });
        }
        Ok(())
    }
}

/// Removes a directory tree; a missing one is fine.
pub(crate) async fn remove_dir(path: &Path) -> Result<(), SessionError> {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SessionError::Storage(fetchgate_storage::Error::Backend(
            format!("cannot delete {}: {e}", path.display()),
        ))),
    }
}

/// A random (version 4) UUID's bytes.
fn new_session_id() -> SessionId {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    SessionId::from_bytes(b)
}

fn validate_secret(s: SecretSpec) -> Result<SecretRule, String> {
    if s.kind != "basic-auth" {
        return Err(format!(
            "unknown type {:?}: only \"basic-auth\" is supported",
            s.kind
        ));
    }
    if s.url.is_empty() {
        return Err("url must be a non-empty glob".into());
    }
    let credentials = s
        .basic_credentials
        .filter(|c| c.contains(':'))
        .ok_or("basic-credentials must be \"user:password\"")?;
    Ok(SecretRule {
        kind: s.kind,
        url_glob: s.url,
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fetchgate_storage::Ended;

    fn header(timeout_secs: u64) -> SessionHeader {
        SessionHeader::new(
            new_session_id(),
            [0; 32],
            Policy::Strict,
            Timestamp::from_micros(1_000_000_000),
            timeout_secs,
        )
    }

    #[test]
    fn a_session_expires_at_the_instant_its_timeout_passes() {
        let h = header(10);
        let just_before = h.created.plus_secs(10).minus_secs(0);
        assert_eq!(
            state(&h, Timestamp::from_micros(just_before.as_micros() - 1)),
            State::Active
        );
        assert_eq!(state(&h, just_before), State::Expired);
        assert_eq!(h.end_time(just_before), Some(h.expires_at()));
    }

    #[test]
    fn states_follow_revocation_and_ending() {
        let now = Timestamp::from_micros(1_000_000_001);
        let mut h = header(10);
        assert_eq!(state(&h, now), State::Active);
        assert_eq!(h.end_time(now), None);
        h.revoked = Some(now);
        assert_eq!(state(&h, now), State::Revoked);
        assert_eq!(h.end_time(now), Some(now));
        h.ended = Some(Ended {
            at: now,
            reason: EndReason::Ended,
        });
        assert_eq!(state(&h, now), State::Ended);
        h.ended = Some(Ended {
            at: now,
            reason: EndReason::Expired,
        });
        assert_eq!(state(&h, now), State::Expired);
    }

    #[test]
    fn session_ids_are_uuid_v4_shaped() {
        let id = new_session_id().to_string();
        assert_eq!(id.len(), 32);
        assert_eq!(&id[12..13], "4");
        assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn secrets_are_validated() {
        let ok = SecretSpec {
            kind: "basic-auth".into(),
            url: "https://x/*".into(),
            basic_credentials: Some("u:p".into()),
        };
        assert!(validate_secret(ok.clone()).is_ok());
        assert!(
            validate_secret(SecretSpec {
                kind: "token".into(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate_secret(SecretSpec {
                url: String::new(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate_secret(SecretSpec {
                basic_credentials: Some("nocolon".into()),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate_secret(SecretSpec {
                basic_credentials: None,
                ..ok
            })
            .is_err()
        );
    }
}
