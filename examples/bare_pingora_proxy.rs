//! A forward proxy with Pingora's own server and defaults and nothing of fetchgate's: no
//! session auth, no audit log, no hashing or inspection, no ACL. It forwards plain
//! absolute-form requests to an IP-literal `host:port` and is not for use as a proxy: it
//! is the floor fetchgate's per-request cost is measured against (`docs/performance.md`,
//! "Pingora's own floor"):
//!
//! ```sh
//! cargo build --release --example bare_pingora_proxy -p fetchgate
//! target/release/examples/bare_pingora_proxy 127.0.0.1:3129 &
//! target/release/fetchgate-loadtest run --target proxy --proxy 127.0.0.1:3129 \
//!     --proxy-pid $! --object 1KiB -c 256 -d 10
//! kill -INT %1   # SIGTERM would wait for Pingora's grace period
//! ```

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session, http_proxy_service};
use pingora::server::Server;
use pingora::{Error, ErrorType, Result};

struct Bare;

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, session: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        // Pingora keeps the absolute-form target as sent in the raw path.
        let addr: SocketAddr = std::str::from_utf8(session.req_header().raw_path())
            .ok()
            .and_then(|raw| raw.parse::<http::Uri>().ok())
            .and_then(|uri| uri.authority()?.as_str().parse().ok())
            .ok_or_else(|| {
                Error::explain(ErrorType::InvalidHTTPHeader, "not absolute-form to ip:port")
            })?;
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _: &mut Session,
        req: &mut RequestHeader,
        _: &mut (),
    ) -> Result<()> {
        // Origin-form upstream: the path and query of the absolute-form target.
        let path = req
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let uri = path
            .parse()
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad request target"))?;
        req.set_uri(uri);
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let Some(listen) = std::env::args().nth(1) else {
        eprintln!("usage: bare_pingora_proxy HOST:PORT");
        return std::process::ExitCode::from(2);
    };
    let mut server = match Server::new(None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot create the server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare);
    service.add_tcp(&listen);
    // As many threads as fetchgate's runtime has workers on this machine.
    service.threads = std::thread::available_parallelism().ok().map(usize::from);
    server.add_service(service);
    server.run_forever()
}
