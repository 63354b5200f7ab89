//! The one small outgoing HTTP/1.1 client: plain `http://` only, one connection per
//! request, one overall timeout, optional HTTP Basic credentials, a cap on the answer's
//! size, JSON in and out. `fetchgate ctl`, the HA pair's peer reads, the debtags
//! upstream and the session webhooks all use it, each with its own [`Options`].

use std::time::Duration;

use base64::Engine;
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where a server is: `http://host[:port][/base]`, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// The base path, without a trailing slash.
    base: String,
}

/// Why a URL is not an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Syntax(String),
    #[error("only http:// URLs are supported")]
    Scheme,
    #[error("the URL may not have a query")]
    Query,
    #[error("the URL has no host")]
    NoHost,
}

impl Endpoint {
    /// Parses `http://[user:password@]host[:port][/base]`; the userinfo, if any, is
    /// returned separately for the caller to accept (as Basic credentials) or refuse.
    pub fn parse(url: &str) -> Result<(Self, Option<String>), UrlError> {
        let uri: Uri = url.parse().map_err(|e| UrlError::Syntax(format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(UrlError::Scheme);
        }
        if uri.query().is_some() {
            return Err(UrlError::Query);
        }
        let authority = uri.authority().ok_or(UrlError::NoHost)?;
        let userinfo = authority
            .as_str()
            .rsplit_once('@')
            .map(|(u, _)| u.to_owned());
        let endpoint = Endpoint {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            base: uri.path().trim_end_matches('/').to_owned(),
        };
        Ok((endpoint, userinfo))
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The full URL of `path` (which starts with `/`) under the base.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority(), self.base)
    }
}

/// Per-use settings of a call.
#[derive(Debug, Clone)]
pub struct Options {
    /// For the whole call: connect, send, and read the answer.
    pub timeout: Duration,
    /// The `Authorization` header value, if any (see [`basic`]).
    pub authorization: Option<String>,
    /// The largest answer body accepted.
    pub max_body: usize,
}

/// The `Authorization` value for `user:password` credentials.
pub fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// A complete answer, whatever its status.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The reason a failed answer gives: its JSON `error`, else its text.
    pub fn error_reason(&self) -> String {
        self.json::<Value>()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned())
    }
}

/// Sends `method path` (path and query, under the endpoint's base) with an optional JSON
/// body and returns the answer; the error is a reason without the URL.
pub async fn send(
    endpoint: &Endpoint,
    options: &Options,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Response, String> {
    let exchange = async {
        let authority = endpoint.authority();
        let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let target = match format!("{}{path}", endpoint.base) {
            t if t.is_empty() => "/".to_owned(),
            t => t,
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(target)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json");
        if let Some(a) = &options.authorization {
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
        let body = Limited::new(resp.into_body(), options.max_body)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        conn.abort();
        Ok(Response { status, body })
    };
    match tokio::time::timeout(options.timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", options.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_rebuilt() {
        let (e, user) = Endpoint::parse("http://127.0.0.1:9999/").unwrap();
        assert_eq!(
            (e.url("/sessions"), user),
            ("http://127.0.0.1:9999/sessions".into(), None)
        );
        let (e, _) = Endpoint::parse("http://[::1]:1/base/").unwrap();
        assert_eq!(e.url("/status"), "http://[::1]:1/base/status");
        let (e, user) = Endpoint::parse("http://u:p@host").unwrap();
        assert_eq!(
            (e.authority(), user.as_deref()),
            ("host:80".into(), Some("u:p"))
        );
    }

    #[test]
    fn bad_urls_say_why() {
        assert_eq!(Endpoint::parse("https://h:1"), Err(UrlError::Scheme));
        assert_eq!(Endpoint::parse("http://h:1/?x=1"), Err(UrlError::Query));
        assert!(matches!(
            Endpoint::parse("h:1"),
            Err(UrlError::Scheme | UrlError::Syntax(_))
        ));
        assert!(matches!(
            Endpoint::parse("not a url"),
            Err(UrlError::Syntax(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_large_answer_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // First connection: read the request and say nothing.
            let (mut silent, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = silent.read(&mut buf).await;
            // Second: an answer larger than the cap.
            let (mut big, _) = listener.accept().await.unwrap();
            let _ = big.read(&mut buf).await;
            big.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                .await
                .unwrap();
            big.write_all(&[b'x'; 100]).await.unwrap();
            silent
        });
        let (endpoint, _) = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let options = Options {
            timeout: Duration::from_millis(200),
            authorization: Some(basic("u:p")),
            max_body: 10,
        };
        let e = send(&endpoint, &options, Method::GET, "/", None)
            .await
            .unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
        let e = send(&endpoint, &options, Method::GET, "/", None)
            .await
            .unwrap_err();
        assert!(e.contains("reading the answer"), "{e}");
        drop(server.await.unwrap());
    }
}
