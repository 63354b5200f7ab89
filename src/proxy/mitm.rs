//! TLS interception: every CONNECT is answered with a leaf certificate for the
//! requested host, signed by the fetchgate CA, minted on an EC P-256 key and kept in a
//! bounded LRU cache shared by all connections. The builder is offered `http/1.1` only,
//! and no session resumption: each connection's configuration is its own, so a ticket
//! could never be redeemed, and a resumed TLS 1.3 handshake still pays for its key
//! exchange.
//!
//! The leaf is for the client's SNI name when it sends one, otherwise for the CONNECT
//! host (clients send no SNI for IP literals).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};

use crate::ca::{CaError, CertificateAuthority};
use crate::telemetry::metric;

/// Leaf certificates by host name, minted on demand.
pub struct CertCache {
    ca: CertificateAuthority,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<LruCache<String, Arc<CertifiedKey>>>,
}

impl CertCache {
    /// A cache of at most `capacity` leaves signed by `ca`.
    pub fn new(ca: CertificateAuthority, capacity: NonZeroUsize) -> Self {
        CertCache {
            ca,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            leaves: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The CA behind the leaves.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The leaf for `host`, from the cache or freshly minted.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = host.to_ascii_lowercase();
        if let Some(hit) = self.lock().get(&host) {
            metrics::counter!(metric::CERT_CACHE, "result" => "hit").increment(1);
            return Ok(Arc::clone(hit));
        }
        metrics::counter!(metric::CERT_CACHE, "result" => "miss").increment(1);
        // Mint outside the lock: signing with an RSA-4096 CA takes milliseconds.
        let (cert, key) = self.ca.mint_leaf(&host)?;
        let key = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
            .map_err(|e| CaError::Sign(format!("minted key unusable: {e}")))?;
        let leaf = Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert)], key));
        self.lock().put(host, Arc::clone(&leaf));
        Ok(leaf)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<CertifiedKey>>> {
        self.leaves.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS configuration for one intercepted CONNECT to `connect_host`.
    pub fn server_config(
        self: &Arc<Self>,
        connect_host: &str,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let resolver = HostResolver {
            cache: Arc::clone(self),
            fallback: connect_host.to_owned(),
        };
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&version::TLS12, &version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The builder's default is a 256-entry session cache of this connection's own,
        // sent two tickets that could never be redeemed: allocated, filled and thrown
        // away with every intercepted connection.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct HostResolver {
    cache: Arc<CertCache>,
    fallback: String,
}

impl std::fmt::Debug for CertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertCache")
    }
}

impl ResolvesServerCert for HostResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name().unwrap_or(&self.fallback);
        match self.cache.leaf(host) {
            Ok(leaf) => Some(leaf),
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot mint a leaf certificate");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> (tempfile::TempDir, Arc<CertCache>) {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = CertificateAuthority::load_or_generate(dir.path()).unwrap();
        (
            dir,
            Arc::new(CertCache::new(ca, NonZeroUsize::new(capacity).unwrap())),
        )
    }

    #[test]
    fn repeated_hosts_come_from_the_cache() {
        let (_d, c) = cache(2);
        let a = c.leaf("a.example").unwrap();
        assert!(
            Arc::ptr_eq(&a, &c.leaf("A.example").unwrap()),
            "case-insensitive hit"
        );
        c.leaf("b.example").unwrap();
        c.leaf("c.example").unwrap();
        assert!(
            !Arc::ptr_eq(&a, &c.leaf("a.example").unwrap()),
            "evicted beyond capacity"
        );
    }

    #[test]
    fn server_config_offers_http1_only() {
        let (_d, c) = cache(4);
        let cfg = c.server_config("127.0.0.1").unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn server_config_keeps_no_sessions_and_sends_no_tickets() {
        let (_d, c) = cache(4);
        let cfg = c.server_config("127.0.0.1").unwrap();
        assert!(!cfg.session_storage.can_cache());
        assert!(!cfg.ticketer.enabled());
        assert_eq!(cfg.send_tls13_tickets, 0);
    }
}
