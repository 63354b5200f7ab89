//! The upstream debtags service: `GET <base>/debtags/{suite}/{component}` answered with
//! the JSON object this daemon's own endpoint serves (so one fetchgate can be another's
//! upstream). Plain HTTP/1.1 over hyper, bounded by one overall timeout and a body
//! size limit; credentials in the base URL (`http://user:pass@host:port`) are sent as
//! HTTP Basic.

use std::time::Duration;

use base64::Engine;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::tags::{self, TagMap};

/// The largest upstream answer accepted.
const MAX_BODY: usize = 64 << 20;

/// A configured upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    host: String,
    port: u16,
    /// The base path, without a trailing slash.
    path: String,
    authorization: Option<String>,
    pub timeout: Duration,
}

/// What the upstream said.
#[derive(Debug)]
pub enum Answer {
    Tags(TagMap),
    /// It answered 404: it does not know the suite/component.
    Unknown,
}

impl Upstream {
    /// Parses an `http://` base URL; the message says what is wrong.
    pub fn parse(url: &str, timeout: Duration) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// upstream URLs are supported".into());
        }
        if uri.query().is_some() {
            return Err("the base URL may not have a query".into());
        }
        let authority = uri.authority().ok_or("the URL has no host")?;
        let userinfo = authority.as_str().rsplit_once('@').map(|(u, _)| u);
        let authorization = userinfo.map(|u| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(u)
            )
        });
        Ok(Upstream {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            path: uri.path().trim_end_matches('/').to_owned(),
            authorization,
            timeout,
        })
    }

    /// Asks for `suite`/`component` (optionally one architecture), within the timeout.
    pub async fn fetch(
        &self,
        suite: &str,
        component: &str,
        arch: Option<&str>,
    ) -> Result<Answer, String> {
        match tokio::time::timeout(self.timeout, self.fetch_inner(suite, component, arch)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn fetch_inner(
        &self,
        suite: &str,
        component: &str,
        arch: Option<&str>,
    ) -> Result<Answer, String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect to {}:{}: {e}", self.host, self.port))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let mut target = format!("{}/debtags/{suite}/{component}", self.path);
        if let Some(a) = arch {
            target.push_str("?arch=");
            target.push_str(a);
        }
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = http::Request::get(target)
            .header(http::header::HOST, host)
            .header(http::header::ACCEPT, "application/json");
        if let Some(a) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let req = req
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
        if status == http::StatusCode::NOT_FOUND {
            return Ok(Answer::Unknown);
        }
        if status != http::StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        let raw: TagMap = serde_json::from_slice(&body)
            .map_err(|e| format!("answer is not a JSON object of strings: {e}"))?;
        Ok(Answer::Tags(
            raw.into_iter()
                .map(|(p, t)| (p, tags::normalise(&t)))
                .filter(|(_, t)| !t.is_empty())
                .collect(),
        ))
    }
}
