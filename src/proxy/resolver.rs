//! Host name resolution for upstream connections: the system resolver (getaddrinfo, so
//! `/etc/hosts` and nsswitch apply) behind a bounded cache of answers kept for a fixed
//! time, since getaddrinfo does not say how long an answer is valid. Without it every
//! request to a named host cost a blocking-pool hop and a resolver query.
//!
//! Concurrent lookups of one name share a single query. Failures are not kept: the
//! next request asks again. IP literals never reach the resolver.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::telemetry::metric;

/// Host names whose answers are kept; the least recently used goes first.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

/// The addresses of a name, looked up once.
type Answer = Arc<OnceCell<Arc<[IpAddr]>>>;

struct Entry {
    answer: Answer,
    expires: Instant,
}

/// Resolves host names, keeping answers for `ttl`.
pub struct Resolver {
    ttl: Duration,
    entries: Mutex<LruCache<String, Entry>>,
    /// `fetchgate_dns_lookups_total{result="hit"}` and `{result="miss"}`, registered
    /// once (see `telemetry::ProxyMetrics`).
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl Resolver {
    /// A resolver keeping answers for `ttl`; zero keeps none. Built after the metrics
    /// recorder is installed, or its lookups are not counted.
    pub fn new(ttl: Duration) -> Self {
        Resolver {
            ttl,
            entries: Mutex::new(LruCache::new(CAPACITY)),
            hits: metrics::counter!(metric::DNS_LOOKUPS, "result" => "hit"),
            misses: metrics::counter!(metric::DNS_LOOKUPS, "result" => "miss"),
        }
    }

    /// The addresses of `host` (a name or an IP literal) with `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let ips = if self.ttl.is_zero() {
            self.misses.increment(1);
            lookup(host).await?
        } else {
            let answer = self.answer(host);
            if let Some(ips) = answer.get() {
                self.hits.increment(1);
                Arc::clone(ips)
            } else {
                self.misses.increment(1);
                Arc::clone(answer.get_or_try_init(|| lookup(host)).await?)
            }
        };
        Ok(ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect())
    }

    /// The cache slot for `host`: its fresh entry, or a new empty one in its place.
    fn answer(&self, host: &str) -> Answer {
        let now = Instant::now();
        let key = host.to_ascii_lowercase();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some(entry) if entry.expires > now => Arc::clone(&entry.answer),
            _ => {
                let answer = Answer::default();
                let expires = now + self.ttl;
                entries.put(
                    key,
                    Entry {
                        answer: Arc::clone(&answer),
                        expires,
                    },
                );
                answer
            }
        }
    }
}

/// One getaddrinfo query (on tokio's blocking pool); each address once, in its order.
async fn lookup(host: &str) -> io::Result<Arc<[IpAddr]>> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in tokio::net::lookup_host((host, 0)).await? {
        if !ips.contains(&addr.ip()) {
            ips.push(addr.ip());
        }
    }
    Ok(ips.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_cached(r: &Resolver, host: &str) -> bool {
        let mut entries = r.entries.lock().unwrap();
        entries
            .get(host)
            .is_some_and(|e| e.answer.initialized() && e.expires > Instant::now())
    }

    #[tokio::test]
    async fn ip_literals_are_not_looked_up() {
        let r = Resolver::new(Duration::from_secs(30));
        let addrs = r.resolve("::1", 8080).await.unwrap();
        assert_eq!(addrs, vec!["[::1]:8080".parse().unwrap()]);
        assert_eq!(r.entries.lock().unwrap().len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_kept_for_the_ttl_whatever_the_port_and_case() {
        let r = Resolver::new(Duration::from_secs(30));
        let first = r.resolve("localhost", 80).await.unwrap();
        assert!(!first.is_empty() && first.iter().all(|a| a.ip().is_loopback()));
        assert!(is_cached(&r, "localhost"));
        let again = r.resolve("LocalHost", 443).await.unwrap();
        assert_eq!(
            again.iter().map(SocketAddr::ip).collect::<Vec<_>>(),
            first.iter().map(SocketAddr::ip).collect::<Vec<_>>()
        );
        assert!(again.iter().all(|a| a.port() == 443));
        assert_eq!(r.entries.lock().unwrap().len(), 1, "one entry per name");

        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!is_cached(&r, "localhost"), "expired");
        r.resolve("localhost", 80).await.unwrap();
        assert!(is_cached(&r, "localhost"), "looked up again");
    }

    #[tokio::test]
    async fn failures_are_not_kept_and_a_zero_ttl_keeps_nothing() {
        let r = Resolver::new(Duration::from_secs(30));
        // Refused before any query (a NUL cannot reach getaddrinfo), so no test traffic
        // leaves the machine.
        assert!(r.resolve("bad\0host", 80).await.is_err());
        assert!(!is_cached(&r, "bad\0host"));

        let r = Resolver::new(Duration::ZERO);
        assert!(!r.resolve("localhost", 80).await.unwrap().is_empty());
        assert_eq!(r.entries.lock().unwrap().len(), 0);
    }
}
