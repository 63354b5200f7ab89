//! A client of fetchgate's control API (`shared/spec/control-api.md`), doing the steps
//! Launchpad's buildd-manager does around a build: create a session, revoke its token,
//! read its report, end it and delete its resources. Every failure, including an
//! unexpected status or a malformed answer, is a [`ControlError`] naming the step.

use std::net::SocketAddr;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{FetchError, basic, one_shot};

/// A failed control API step.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{step}: {source}")]
    Transport {
        step: &'static str,
        source: FetchError,
    },
    #[error("{step}: HTTP {status}: {body}")]
    Status {
        step: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("{step}: malformed answer: {reason}")]
    Malformed { step: &'static str, reason: String },
}

/// A session as `POST /session` returned it.
#[derive(Debug, Clone)]
pub struct SessionCredentials {
    pub id: String,
    pub token: String,
}

/// The control API of one fetchgate.
#[derive(Debug, Clone)]
pub struct ControlClient {
    addr: SocketAddr,
    authorization: String,
}

impl ControlClient {
    /// A client for the control API at `addr` with `user:password` credentials.
    pub fn new(addr: SocketAddr, user: &str, password: &str) -> ControlClient {
        ControlClient {
            addr,
            authorization: basic(user, password),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn call(
        &self,
        step: &'static str,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> Result<bytes::Bytes, ControlError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let (status, bytes) = one_shot(self.addr, method, path, authorization, body)
            .await
            .map_err(|source| ControlError::Transport { step, source })?;
        if status != StatusCode::OK {
            return Err(ControlError::Status {
                step,
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            });
        }
        Ok(bytes)
    }

    /// `GET /status` answers 200 (no auth): the readiness probe.
    pub async fn ready(&self) -> bool {
        self.call("status", Method::GET, "/status", None, None)
            .await
            .is_ok()
    }

    /// `POST /session` with the given policy, trusting what `inspectors` (an
    /// `inspectors-configuration` object) names.
    pub async fn create_session(
        &self,
        policy: &str,
        inspectors: Option<&Value>,
    ) -> Result<SessionCredentials, ControlError> {
        let step = "create session";
        let mut body = json!({ "policy": policy });
        if let Some(config) = inspectors {
            body["inspectors-configuration"] = config.clone();
        }
        let bytes = self
            .call(
                step,
                Method::POST,
                "/session",
                Some(&self.authorization),
                Some(body),
            )
            .await?;
        let malformed = |reason: String| ControlError::Malformed { step, reason };
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        match (v["id"].as_str(), v["token"].as_str()) {
            (Some(id), Some(token)) => Ok(SessionCredentials {
                id: id.to_owned(),
                token: token.to_owned(),
            }),
            _ => Err(malformed(format!("no string id and token in {v}"))),
        }
    }

    /// `DELETE /session/{id}/token` with the token in the body.
    pub async fn revoke(&self, s: &SessionCredentials) -> Result<(), ControlError> {
        self.call(
            "revoke token",
            Method::DELETE,
            &format!("/session/{}/token", s.id),
            None,
            Some(json!({ "token": s.token })),
        )
        .await
        .map(drop)
    }

    /// `GET /session/{id}`: the report's JSON, unparsed (the checks in
    /// [`crate::verify`] read only what they need from it).
    pub async fn report(&self, s: &SessionCredentials) -> Result<bytes::Bytes, ControlError> {
        self.call(
            "read report",
            Method::GET,
            &format!("/session/{}", s.id),
            Some(&self.authorization),
            None,
        )
        .await
    }

    /// `DELETE /session/{id}` then `DELETE /resources/{id}`, as Launchpad ends a build.
    pub async fn end(&self, s: &SessionCredentials) -> Result<(), ControlError> {
        for (step, path) in [
            ("end session", format!("/session/{}", s.id)),
            ("delete resources", format!("/resources/{}", s.id)),
        ] {
            self.call(step, Method::DELETE, &path, Some(&self.authorization), None)
                .await?;
        }
        Ok(())
    }
}
