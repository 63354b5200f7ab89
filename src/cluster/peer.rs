//! Another node of the pair, reached at its control URL (`--peer http://host:port`).

use std::time::Duration;

use fetchgate_storage::SessionId;
use http::Method;

use super::NodeRecords;
use crate::http_client::{self, Endpoint, Options};

/// The largest answer accepted from a peer (a session's records, as JSON).
const MAX_BODY: usize = 1 << 30;

/// A peer's control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    endpoint: Endpoint,
}

impl Peer {
    /// Parses an `http://host:port[/path]` control URL; the message says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (endpoint, userinfo) = Endpoint::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        if userinfo.is_some() {
            return Err(format!(
                "{url:?}: no credentials in the URL, peers share the control credentials"
            ));
        }
        Ok(Peer { endpoint })
    }

    /// The peer's records of a session, within `timeout`. `credentials` is the control
    /// API's `user:password`.
    pub async fn records(
        &self,
        id: SessionId,
        credentials: &str,
        timeout: Duration,
    ) -> Result<NodeRecords, String> {
        let options = Options {
            timeout,
            authorization: Some(http_client::basic(credentials)),
            max_body: MAX_BODY,
        };
        let peer = self.endpoint.authority();
        let path = format!("/internal/records/{id}");
        let resp = http_client::send(&self.endpoint, &options, Method::GET, &path, None)
            .await
            .map_err(|e| format!("peer {peer}: {e}"))?;
        if resp.status != http::StatusCode::OK {
            return Err(format!("peer {peer}: answered {}", resp.status));
        }
        resp.json()
            .map_err(|e| format!("peer {peer}: answer is not a node's records: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls_are_plain_http_without_credentials() {
        let p = Peer::parse("http://127.0.0.1:9999/").unwrap();
        assert_eq!(p.endpoint.url("/x"), "http://127.0.0.1:9999/x");
        for bad in ["https://h:1", "http://u:p@h:1", "h:1", "http://h:1/?x=1"] {
            assert!(Peer::parse(bad).is_err(), "{bad}");
        }
    }
}
