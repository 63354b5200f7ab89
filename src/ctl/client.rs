//! A minimal HTTP/1.1 client for the control API: one connection per request, HTTP
//! Basic credentials, JSON in and out, one overall timeout. Plain `http://` only: the
//! control API speaks nothing else.

use std::time::Duration;

use base64::Engine;
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The largest answer accepted (a report of a very large session fits easily).
const MAX_BODY: usize = 1 << 30;

/// Why a call to the control API failed; every message names the URL.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid control API URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{method} {url} answered {status}: {reason}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        reason: String,
    },
    #[error("{url}: the answer is not JSON: {reason}")]
    NotJson { url: String, reason: String },
}

/// Where the control API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ControlClient {
    host: String,
    port: u16,
    /// The base path, without a trailing slash.
    base: String,
    authorization: Option<String>,
    timeout: Duration,
}

impl ControlClient {
    /// Parses `http://host[:port][/base]`; `credentials` is `user:password`.
    pub fn new(
        url: &str,
        credentials: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("use http://host:port (the control API is plain HTTP)"));
        }
        if uri.query().is_some() {
            return Err(bad("the URL may not have a query"));
        }
        let authority = uri.authority().ok_or_else(|| bad("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "put credentials in --auth or FETCH_SERVICE_AUTH, not in the URL",
            ));
        }
        let authorization = credentials.map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        });
        Ok(ControlClient {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            base: uri.path().trim_end_matches('/').to_owned(),
            authorization,
            timeout,
        })
    }

    fn url(&self, path: &str) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}{}{path}", self.host, self.port, self.base)
        } else {
            format!("http://{}:{}{}{path}", self.host, self.port, self.base)
        }
    }

    /// Sends `method path` with an optional JSON body and returns the JSON answer of a
    /// 2xx response; any other status is an error carrying the API's reason.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let raw = match tokio::time::timeout(self.timeout, self.send(&method, path, body)).await {
            Ok(r) => r.map_err(|reason| ClientError::Transport {
                url: url.clone(),
                reason,
            })?,
            Err(_) => {
                return Err(ClientError::Transport {
                    url,
                    reason: format!("no answer within {:?}", self.timeout),
                });
            }
        };
        let (status, bytes) = raw;
        if !status.is_success() {
            let reason = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
            return Err(ClientError::Status {
                method,
                url,
                status,
                reason,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::NotJson {
            url,
            reason: e.to_string(),
        })
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(http::header::HOST, host)
            .header(http::header::ACCEPT, "application/json");
        if let Some(a) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let payload = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        conn.abort();
        Ok((status, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_rebuilt() {
        let c = ControlClient::new("http://127.0.0.1:9999/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.url("/sessions"), "http://127.0.0.1:9999/sessions");
        let c = ControlClient::new("http://[::1]:1/base/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.url("/status"), "http://[::1]:1/base/status");
        let c = ControlClient::new("http://host", None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.port, 80);
    }

    #[test]
    fn bad_urls_name_the_input() {
        for (url, why) in [
            ("https://h:1", "plain HTTP"),
            ("http://u:p@h:1", "not in the URL"),
            ("http://h:1/?x=1", "query"),
            ("not a url", "invalid control API URL"),
        ] {
            let e = ControlClient::new(url, None, Duration::from_secs(1))
                .unwrap_err()
                .to_string();
            assert!(e.contains(url) && e.contains(why), "{url}: {e}");
        }
    }
}
