//! The PROXY protocol, version 2 (HAProxy's binary header): a proxy that passes TCP
//! connections through says, in the first bytes it sends to the backend, which client the
//! connection is for. The proxy sends it (`--send-proxy-v2`); test-server reads it from the
//! addresses it trusts (`--trusted-proxy`), so that its per-address limits and logs see the
//! client rather than the proxy.
//!
//! ```
//! use shared::proxy_protocol::{encode_v2, parse_v2, Parsed};
//! let client = "203.0.113.7:51000".parse().unwrap();
//! let proxy = "10.0.0.1:7000".parse().unwrap();
//! let mut bytes = encode_v2(client, proxy);
//! bytes.extend_from_slice(b"first frame");
//! match parse_v2(&bytes) {
//!     Parsed::Header { consumed, source } => {
//!         assert_eq!(source, Some(client));
//!         assert_eq!(&bytes[consumed..], b"first frame");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

use std::net::{IpAddr, SocketAddr};

/// The header's first twelve bytes.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest header this module accepts: the fixed part and the longest address block
/// (two Unix paths, 216 bytes), plus room for TLVs.
pub const MAX_HEADER: usize = 16 + 512;

/// The header for a TCP connection from `source` to `destination` (the `PROXY` command; both
/// as IPv6 when their families differ).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not all of the header yet.
    Incomplete,
    /// The header takes `consumed` bytes; `source` is the client it names (`None`: a `LOCAL`
    /// connection — the proxy's own, e.g. a health check — or an address family other than
    /// TCP over IPv4/IPv6: the socket's own peer stands).
    Header {
        /// Bytes of the header.
        consumed: usize,
        /// The client the connection is for.
        source: Option<SocketAddr>,
    },
    /// Not a PROXY v2 header.
    Invalid(&'static str),
}

/// Reads a PROXY v2 header from the start of `data`.
pub fn parse_v2(data: &[u8]) -> Parsed {
    let have = data.len().min(SIGNATURE.len());
    if data[..have] != SIGNATURE[..have] {
        return Parsed::Invalid("no PROXY v2 signature");
    }
    if data.len() < 16 {
        return Parsed::Incomplete;
    }
    let (ver_cmd, family) = (data[12], data[13]);
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("not version 2");
    }
    let len = usize::from(u16::from_be_bytes([data[14], data[15]]));
    if 16 + len > MAX_HEADER {
        return Parsed::Invalid("header too long");
    }
    if data.len() < 16 + len {
        return Parsed::Incomplete;
    }
    let block = &data[16..16 + len];
    let consumed = 16 + len;
    let source = match (ver_cmd & 0x0F, family) {
        (0x0, _) => None, // LOCAL
        (0x1, 0x11) if len >= 12 => {
            let ip: [u8; 4] = block[0..4].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([block[8], block[9]]);
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        (0x1, 0x21) if len >= 36 => {
            let ip: [u8; 16] = block[0..16].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([block[32], block[33]]);
            let ip = std::net::Ipv6Addr::from(ip);
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(SocketAddr::new(ip, port))
        }
        (0x1, 0x11 | 0x21) => return Parsed::Invalid("address block too short"),
        (0x1, _) => None, // UNSPEC, UDP or Unix: the socket's peer stands
        _ => return Parsed::Invalid("unknown command"),
    };
    Parsed::Header { consumed, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        let v6: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
        let v4: SocketAddr = "192.0.2.1:7000".parse().unwrap();
        for (s, d) in [(v4, v4), (v6, v4), (v4, v6)] {
            let h = encode_v2(s, d);
            assert_eq!(
                parse_v2(&h),
                Parsed::Header {
                    consumed: h.len(),
                    source: Some(s)
                }
            );
            for cut in 0..h.len() {
                assert_eq!(parse_v2(&h[..cut]), Parsed::Incomplete, "{cut}");
            }
        }
        assert!(matches!(
            parse_v2(b"GET / HTTP/1.1\r\n"),
            Parsed::Invalid(_)
        ));
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse_v2(&local),
            Parsed::Header {
                consumed: 16,
                source: None
            }
        );
        let mut long = SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(parse_v2(&long), Parsed::Invalid(_)));
    }
}
