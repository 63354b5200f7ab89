//! Proxy authentication: `Proxy-Authorization: Basic base64(session-id:token)`, the one
//! check used for plain requests and CONNECTs alike. The decision itself (token hash,
//! constant-time comparison, session state) is the session service's.

use fetchgate_storage::{SessionHeader, SessionId};

use crate::session::{SessionError, Sessions};
use crate::telemetry::SECURITY;

/// A refused proxy request: the status to answer, the reason, and the session to
/// record it under when the credentials were right but the session can no longer be
/// used.
pub struct Refusal {
    /// 407, or 503 while the session store cannot be asked (the credentials may well
    /// be right: the client should retry, not give up on them).
    pub status: u16,
    pub session: Option<SessionId>,
    pub reason: String,
}

impl Refusal {
    fn anonymous(reason: &str) -> Self {
        Refusal {
            status: 407,
            session: None,
            reason: reason.to_owned(),
        }
    }
}

impl From<SessionError> for Refusal {
    fn from(e: SessionError) -> Self {
        match e {
            // Right credentials, revoked/ended/expired session: record it under the
            // session. A wrong token never writes into the session it names.
            SessionError::WrongState { id, .. } => Refusal {
                status: 407,
                session: Some(id),
                reason: e.to_string(),
            },
            // Nothing is recorded: the session cannot be confirmed.
            SessionError::Storage(e) => Refusal {
                status: 503,
                session: None,
                reason: format!("the session store is unavailable: {e}"),
            },
            e => Refusal {
                status: 407,
                session: None,
                reason: e.to_string(),
            },
        }
    }
}

/// Checks a `Proxy-Authorization` header value (absent: `None`).
pub async fn authenticate(
    sessions: &Sessions,
    header: Option<&[u8]>,
    client: &str,
) -> Result<SessionHeader, Refusal> {
    let result = match header.and_then(fetchgate_formats::basic_auth::parse) {
        None => Err(Refusal::anonymous(
            "proxy credentials required (Basic session-id:token)",
        )),
        Some((user, token)) => match user.parse::<SessionId>() {
            Err(_) => Err(Refusal::anonymous(
                "proxy credentials: the user name is not a session id",
            )),
            Ok(id) => sessions.authorize(id, &token).await.map_err(Refusal::from),
        },
    };
    if let Err(r) = &result {
        log_refusal(r, client);
    }
    result
}

/// Re-checks the session of a CONNECT tunnel for a request inside it.
pub async fn recheck(
    sessions: &Sessions,
    id: SessionId,
    client: &str,
) -> Result<SessionHeader, Refusal> {
    let result = sessions.check_active(id).await.map_err(Refusal::from);
    if let Err(r) = &result {
        log_refusal(r, client);
    }
    result
}

fn log_refusal(r: &Refusal, client: &str) {
    // A refusal that names its session had the right token for a session that is no
    // longer active: a revoked (or ended, or expired) token still in use.
    let event = if r.session.is_some() {
        "revoked-token-use"
    } else {
        "proxy-auth-failure"
    };
    tracing::warn!(
        target: SECURITY,
        event,
        client,
        session = ?r.session,
        status = r.status,
        reason = %r.reason,
        "proxy request refused"
    );
}
