//! The upstream debtags service: `GET <base>/debtags/{suite}/{component}` answered with
//! the JSON object this daemon's own endpoint serves (so one fetchgate can be another's
//! upstream). Plain HTTP/1.1 over hyper, bounded by one overall timeout and a body
//! size limit; credentials in the base URL (`http://user:pass@host:port`) are sent as
//! HTTP Basic.

use std::time::Duration;

use http::Method;

use crate::http_client::{self, Endpoint, Options};
use fetchgate_formats::debtags::{self as tags, TagMap};

/// The largest upstream answer accepted.
const MAX_BODY: usize = 64 << 20;

/// A configured upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    endpoint: Endpoint,
    options: Options,
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
        let (endpoint, userinfo) = Endpoint::parse(url).map_err(|e| e.to_string())?;
        Ok(Upstream {
            endpoint,
            options: Options {
                timeout,
                authorization: userinfo.as_deref().map(http_client::basic),
                max_body: MAX_BODY,
            },
        })
    }

    /// The overall timeout of one fetch.
    pub fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// Asks for `suite`/`component` (optionally one architecture), within the timeout.
    pub async fn fetch(
        &self,
        suite: &str,
        component: &str,
        arch: Option<&str>,
    ) -> Result<Answer, String> {
        let mut target = format!("/debtags/{suite}/{component}");
        if let Some(a) = arch {
            target.push_str("?arch=");
            target.push_str(a);
        }
        let resp =
            http_client::send(&self.endpoint, &self.options, Method::GET, &target, None).await?;
        if resp.status == http::StatusCode::NOT_FOUND {
            return Ok(Answer::Unknown);
        }
        if resp.status != http::StatusCode::OK {
            return Err(format!("answered {}", resp.status));
        }
        let raw: TagMap = resp
            .json()
            .map_err(|e| format!("answer is not a JSON object of strings: {e}"))?;
        Ok(Answer::Tags(
            raw.into_iter()
                .map(|(p, t)| (p, tags::normalise(&t)))
                .filter(|(_, t)| !t.is_empty())
                .collect(),
        ))
    }
}
