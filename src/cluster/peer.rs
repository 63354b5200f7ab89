//! Another node of the pair, reached at its control URL (`--peer http://host:port`).

use std::time::Duration;

use base64::Engine;
use fetchgate_storage::SessionId;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::NodeRecords;

/// The largest answer accepted from a peer (a session's records, as JSON).
const MAX_BODY: usize = 1 << 30;

/// A peer's control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    host: String,
    port: u16,
    /// The base path, without a trailing slash.
    path: String,
}

impl Peer {
    /// Parses an `http://host:port[/path]` control URL; the message says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{url:?}: only http:// control URLs are supported"));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: a control URL may not have a query"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?}: no credentials in the URL, peers share the control credentials"
            ));
        }
        Ok(Peer {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The peer's records of a session, within `timeout`. `credentials` is the control
    /// API's `user:password`.
    pub async fn records(
        &self,
        id: SessionId,
        credentials: &str,
        timeout: Duration,
    ) -> Result<NodeRecords, String> {
        match tokio::time::timeout(timeout, self.fetch(id, credentials)).await {
            Ok(r) => r.map_err(|e| format!("peer {}: {e}", self.authority())),
            Err(_) => Err(format!(
                "peer {}: no answer within {timeout:?}",
                self.authority()
            )),
        }
    }

    async fn fetch(&self, id: SessionId, credentials: &str) -> Result<NodeRecords, String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let req = http::Request::get(format!("{}/internal/records/{id}", self.path))
            .header(http::header::HOST, self.authority())
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        conn.abort();
        if status != http::StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("answer is not a node's records: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls_are_plain_http_without_credentials() {
        let p = Peer::parse("http://127.0.0.1:9999/").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.path.as_str()),
            ("127.0.0.1", 9999, "")
        );
        for bad in ["https://h:1", "http://u:p@h:1", "h:1", "http://h:1/?x=1"] {
            assert!(Peer::parse(bad).is_err(), "{bad}");
        }
    }
}
