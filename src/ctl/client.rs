//! A minimal HTTP/1.1 client for the control API: one connection per request, HTTP
//! Basic credentials, JSON in and out, one overall timeout. Plain `http://` only: the
//! control API speaks nothing else.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;

use crate::http_client::{self, Endpoint, Options, UrlError};

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
    endpoint: Endpoint,
    options: Options,
}

impl ControlClient {
    /// Parses `http://host[:port][/base]`; `credentials` is `user:password`.
    pub fn new(
        url: &str,
        credentials: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::Url {
            url: url.to_owned(),
            reason,
        };
        let (endpoint, userinfo) = Endpoint::parse(url).map_err(|e| match e {
            UrlError::Scheme => bad("use http://host:port (the control API is plain HTTP)".into()),
            e => bad(e.to_string()),
        })?;
        if userinfo.is_some() {
            return Err(bad(
                "put credentials in --auth or FETCH_SERVICE_AUTH, not in the URL".into(),
            ));
        }
        Ok(ControlClient {
            endpoint,
            options: Options {
                timeout,
                authorization: credentials.map(http_client::basic),
                max_body: MAX_BODY,
            },
        })
    }

    fn url(&self, path: &str) -> String {
        self.endpoint.url(path)
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
        let resp = http_client::send(&self.endpoint, &self.options, method.clone(), path, body)
            .await
            .map_err(|reason| ClientError::Transport {
                url: url.clone(),
                reason,
            })?;
        if !resp.status.is_success() {
            return Err(ClientError::Status {
                method,
                url,
                status: resp.status,
                reason: resp.error_reason(),
            });
        }
        resp.json().map_err(|e| ClientError::NotJson {
            url,
            reason: e.to_string(),
        })
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
        assert_eq!(c.url("/status"), "http://host:80/status");
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
