//! How the proxy picks a backend: the strategies, their names, and the consistent-hash ring.
//!
//! The algorithms are plain functions over the candidates' loads so that they can be tested
//! without sockets; [`super::pool::Pool::select`] feeds them the live counters.

use std::fmt;

/// A load-balancing strategy, switchable at runtime (admin `POST /strategy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Each backend in turn.
    RoundRobin,
    /// Smooth weighted round-robin (nginx's): backends in proportion to their weights,
    /// interleaved rather than in bursts.
    WeightedRoundRobin,
    /// The backend with the fewest requests in flight relative to its weight.
    LeastConnections,
    /// Two backends at random, the less loaded of them ("power of two choices").
    PowerOfTwo,
    /// The same key always reaches the same backend while it is up; adding or removing a
    /// backend moves only about 1/N of the keys.
    ConsistentHash(HashKey),
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// A request header (the client's IP when the request lacks it; TCP mode always uses the
    /// IP).
    Header(String),
}

/// The names `--strategy` and the admin API accept.
pub const NAMES: &[&str] = &[
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "power_of_two",
    "consistent_hash",
];

impl Strategy {
    /// From a name in [`NAMES`] and, for `consistent_hash`, a key: `client_ip` (default) or
    /// `header:<Name>`.
    pub fn parse(name: &str, key: Option<&str>) -> Result<Self, String> {
        let s = match name {
            "round_robin" => Strategy::RoundRobin,
            "weighted_round_robin" => Strategy::WeightedRoundRobin,
            "least_connections" => Strategy::LeastConnections,
            "power_of_two" => Strategy::PowerOfTwo,
            "consistent_hash" => Strategy::ConsistentHash(match key {
                None | Some("client_ip") => HashKey::ClientIp,
                Some(k) => match k.strip_prefix("header:") {
                    Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()) => {
                        HashKey::Header(h.to_string())
                    }
                    _ => {
                        return Err(format!(
                            "unknown hash key {k:?}: use client_ip or header:<Name>"
                        ))
                    }
                },
            }),
            other => {
                return Err(format!(
                    "unknown strategy {other:?}: use one of {}",
                    NAMES.join(", ")
                ))
            }
        };
        if key.is_some() && !matches!(s, Strategy::ConsistentHash(_)) {
            return Err("a hash key goes with consistent_hash only".into());
        }
        Ok(s)
    }

    /// The strategy's name, as [`Strategy::parse`] takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRoundRobin => "weighted_round_robin",
            Strategy::LeastConnections => "least_connections",
            Strategy::PowerOfTwo => "power_of_two",
            Strategy::ConsistentHash(_) => "consistent_hash",
        }
    }

    /// The hash key, for consistent hashing.
    pub fn hash_key(&self) -> Option<String> {
        match self {
            Strategy::ConsistentHash(HashKey::ClientIp) => Some("client_ip".into()),
            Strategy::ConsistentHash(HashKey::Header(h)) => Some(format!("header:{h}")),
            _ => None,
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hash_key() {
            Some(k) => write!(f, "{} ({k})", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// 64-bit FNV-1a followed by a mixing step, for ring positions and keys: stable across runs
/// and builds, so affinity survives a proxy restart.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser spreads FNV's weak low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Points per backend on the ring (times its weight, capped): enough that keys split within a
/// few per cent of evenly.
const POINTS: usize = 160;

/// A consistent-hash ring over backend indexes.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// The ring for backends named by `ids` (their addresses), with weights.
    pub fn new<'a>(ids: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let mut points = Vec::new();
        for (i, (id, weight)) in ids.into_iter().enumerate() {
            let n = POINTS * (weight.clamp(1, 16) as usize);
            for v in 0..n {
                points.push((hash64(format!("{id}#{v}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The first backend at or after `key`'s position for which `eligible` holds.
    pub fn lookup(&self, key: &[u8], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let h = hash64(key);
        let start = self.points.partition_point(|(p, _)| *p < h);
        let n = self.points.len();
        (0..n)
            .map(|k| self.points[(start + k) % n].1)
            .find(|&i| eligible(i))
    }
}

/// Smooth weighted round-robin step over `(index, weight)` candidates: adds each weight to its
/// running `current`, picks the largest, and takes the total back from it.
pub fn smooth_weighted(current: &mut [i64], candidates: &[(usize, u32)]) -> Option<usize> {
    let total: i64 = candidates.iter().map(|(_, w)| i64::from(*w)).sum();
    let mut best: Option<usize> = None;
    for &(i, w) in candidates {
        current[i] += i64::from(w);
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

/// Fewest in flight per unit of weight among `(index, active, weight)`; ties go to the first
/// at or after `start` in the list, so that idle backends share the work.
pub fn least_loaded(candidates: &[(usize, u64, u32)], start: usize) -> Option<usize> {
    let n = candidates.len();
    (0..n)
        .map(|k| candidates[(start + k) % n])
        .min_by(|a, b| {
            // a.active / a.weight < b.active / b.weight, without division.
            (u128::from(a.1) * u128::from(b.2.max(1)))
                .cmp(&(u128::from(b.1) * u128::from(a.2.max(1))))
        })
        .map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        for name in NAMES {
            assert_eq!(Strategy::parse(name, None).unwrap().name(), *name);
        }
        let h = Strategy::parse("consistent_hash", Some("header:X-User")).unwrap();
        assert_eq!(
            h,
            Strategy::ConsistentHash(HashKey::Header("X-User".into()))
        );
        assert!(Strategy::parse("random", None).is_err());
        assert!(Strategy::parse("consistent_hash", Some("cookie")).is_err());
        assert!(Strategy::parse("round_robin", Some("client_ip")).is_err());
    }

    #[test]
    fn smooth_weighted_interleaves_in_proportion() {
        let mut cur = vec![0; 3];
        let cands = [(0, 5), (1, 1), (2, 1)];
        let picks: Vec<usize> = (0..7)
            .map(|_| smooth_weighted(&mut cur, &cands).unwrap())
            .collect();
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_loaded_respects_weights_and_rotates_ties() {
        assert_eq!(least_loaded(&[(0, 4, 1), (1, 1, 1), (2, 3, 1)], 0), Some(1));
        assert_eq!(least_loaded(&[(0, 4, 4), (1, 2, 1)], 0), Some(0));
        assert_eq!(least_loaded(&[(0, 0, 1), (1, 0, 1)], 1), Some(1));
    }

    #[test]
    fn the_ring_keeps_keys_in_place_and_moves_about_one_nth() {
        let names: Vec<String> = (0..4).map(|i| format!("10.0.0.{i}:80")).collect();
        let four = Ring::new(names.iter().map(|n| (n.as_str(), 1)));
        let mut counts = [0usize; 5];
        let keys: Vec<String> = (0..10_000).map(|k| format!("client-{k}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| four.lookup(k.as_bytes(), |_| true).unwrap())
            .collect();
        for b in &before {
            counts[*b] += 1;
        }
        for c in &counts[..4] {
            assert!((1_500..3_500).contains(c), "{counts:?}");
        }
        let mut more = names.clone();
        more.push("10.0.0.9:80".into());
        let five = Ring::new(more.iter().map(|n| (n.as_str(), 1)));
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(k, b)| five.lookup(k.as_bytes(), |_| true) != Some(**b))
            .count();
        // Ideally 1/5 of the keys move, all of them to the new backend.
        assert!((1_000..3_000).contains(&moved), "{moved} moved");
        // A backend that is down sends its keys to the next one only.
        let skip = four.lookup(b"client-1", |i| i != before[1]).unwrap();
        assert_ne!(skip, before[1]);
    }
}
