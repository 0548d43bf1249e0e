//! `HOST:PORT` as people type it: an IP address or a host name, resolved once (its first
//! address), with errors that say what is wrong ("no port", "resolves to nothing").
//!
//! ```
//! let a = shared::addr::resolve("localhost:7000").unwrap();
//! assert_eq!(a.port(), 7000);
//! assert!(shared::addr::resolve("127.0.0.1").unwrap_err().contains("no port"));
//! ```

use std::net::{SocketAddr, ToSocketAddrs};

/// `text` (`IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`) as a socket address; a name is resolved
/// now, once. The error is a sentence for a person.
pub fn resolve(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    let has_port = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.ends_with(':') && port.parse::<u16>().is_ok()
    });
    if !has_port {
        return Err(format!(
            "{text:?} has no port: give HOST:PORT (an IP address or a host name, a colon, a port)"
        ));
    }
    match text.to_socket_addrs() {
        Ok(mut a) => a
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(e) => Err(format!("cannot resolve {text:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn addresses_names_and_what_is_missing() {
        assert_eq!(resolve("127.0.0.1:80").unwrap().port(), 80);
        assert_eq!(resolve("[::1]:81").unwrap().port(), 81);
        assert!(resolve("localhost:82").unwrap().ip().is_loopback());
        assert!(resolve("localhost").unwrap_err().contains("no port"));
        assert!(resolve("127.0.0.1:").unwrap_err().contains("no port"));
        assert!(resolve("no-such-host.invalid:80")
            .unwrap_err()
            .contains("cannot resolve"));
    }
}
