//! Session event webhooks: when this node revokes, ends or expires a session, a small
//! JSON event is POSTed to every configured URL. Events wait in a bounded queue that
//! one task drains in order, retrying each delivery with exponential backoff; the proxy
//! and the control API only ever `try_send` into the queue, so a slow or dead receiver
//! never blocks them. A full queue drops the event (logged and counted).

use std::time::Duration;

use fetchgate_storage::{SessionHeader, Timestamp};
use http::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::http_client::{self, Endpoint, Options};
use crate::rfc3339;
use crate::session::Finish;
use crate::telemetry::metric;

/// Events that may wait for delivery before new ones are dropped.
pub const QUEUE_DEPTH: usize = 1024;
/// The first retry waits this long; each further one twice as long as the previous.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The largest answer read from a receiver (its body is ignored).
const MAX_ANSWER: usize = 64 << 10;

/// Where events go and how hard to try.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Receivers, each given every event: the URL as configured, where it points, and
    /// the `user:password` in it, sent as Basic credentials.
    pub urls: Vec<(String, Endpoint, Option<String>)>,
    /// For one attempt: connect, send, and the answer.
    pub timeout: Duration,
    /// Attempts per event and receiver, the first included.
    pub attempts: u32,
}

/// The sending side of the queue; cheap to call from any thread.
pub struct Webhooks {
    queue: mpsc::Sender<Value>,
}

/// The event a receiver gets; `end-time` is when the token stopped working
/// (revocation or expiry, as in the report).
pub fn event(h: &SessionHeader, how: Finish, at: Timestamp) -> Value {
    json!({
        "event": how.as_str(),
        "time": rfc3339::format(at),
        "session-id": h.id.to_string(),
        "policy": h.policy.as_str(),
        "owner": h.owner,
        "labels": h.labels,
        "start-time": rfc3339::format(h.created),
        "end-time": h.end_time(at).map(rfc3339::format),
    })
}

impl Webhooks {
    /// Starts the delivery task (on the current runtime); `None` without receivers.
    pub fn start(config: WebhookConfig) -> Option<Self> {
        if config.urls.is_empty() {
            return None;
        }
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(deliver_all(config, rx));
        Some(Webhooks { queue })
    }

    /// Queues the event of `h` finishing; never waits.
    pub fn notify(&self, h: &SessionHeader, how: Finish) {
        let event = event(h, how, Timestamp::now());
        if let Err(e) = self.queue.try_send(event) {
            metrics::counter!(metric::WEBHOOK_EVENTS, "outcome" => "dropped").increment(1);
            tracing::warn!(session = %h.id, event = how.as_str(), error = %e, "webhook queue full; event dropped");
        }
    }
}

async fn deliver_all(config: WebhookConfig, mut rx: mpsc::Receiver<Value>) {
    let options: Vec<Options> = config
        .urls
        .iter()
        .map(|(_, _, userinfo)| Options {
            timeout: config.timeout,
            authorization: userinfo.as_deref().map(http_client::basic),
            max_body: MAX_ANSWER,
        })
        .collect();
    while let Some(event) = rx.recv().await {
        for ((url, endpoint, _), options) in config.urls.iter().zip(&options) {
            let outcome = deliver(endpoint, options, &event, config.attempts).await;
            match &outcome {
                Ok(()) => tracing::debug!(url, "webhook event delivered"),
                Err(e) => {
                    tracing::warn!(url, error = %e, event = %event["event"], session = %event["session-id"], "webhook event not delivered; giving up")
                }
            }
            let label = if outcome.is_ok() {
                "delivered"
            } else {
                "failed"
            };
            metrics::counter!(metric::WEBHOOK_EVENTS, "outcome" => label).increment(1);
        }
    }
}

/// Posts `event` until a receiver answers 2xx, at most `attempts` times.
async fn deliver(
    endpoint: &Endpoint,
    options: &Options,
    event: &Value,
    attempts: u32,
) -> Result<(), String> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let error = match http_client::send(endpoint, options, Method::POST, "", Some(event)).await
        {
            Ok(r) if r.status.is_success() => return Ok(()),
            Ok(r) => format!("answered {}", r.status),
            Err(e) => e,
        };
        if attempt >= attempts {
            return Err(format!("{error} (after {attempt} attempts)"));
        }
        tracing::debug!(error, attempt, "webhook delivery failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
    }
}
