//! Name resolution that treats every `*.localhost` name as the loopback address (RFC 6761 §6.3, as
//! browsers do), so that sandbox hosts of a local E2B-compatible server (`3000-{id}.localhost:41000`)
//! resolve without a DNS entry. Every other name goes to the system resolver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Loopback for `localhost` and `*.localhost`, the system resolver otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalhostResolver;

/// Whether `host` is `localhost` or a name under it.
pub fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

impl Resolve for LocalhostResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if is_localhost(&host) {
                let loopback = [
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
                ];
                let addrs: Addrs = Box::new(loopback.into_iter());
                return Ok(addrs);
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("3000-abc.localhost"));
        assert!(is_localhost("3000-abc.LOCALHOST."));
        assert!(!is_localhost("localhost.example.com"));
        assert!(!is_localhost("notlocalhost"));
    }
}
