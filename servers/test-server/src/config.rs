//! Settings every loop of a test-server shares: authentication and liveness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::auth::{self, TokenSigner};
use crate::verifier::Verifier;

/// Authentication settings shared by every loop.
#[derive(Debug)]
pub struct AuthConfig {
    /// Issues and checks tokens (the key all instances share).
    pub signer: TokenSigner,
    /// Checks secrets off the loops.
    pub verifier: Verifier,
    /// Stored form of a secret nobody has: checked when the user does not exist, so that an
    /// unknown user takes as long as a wrong secret.
    pub decoy: String,
    /// A user to create (or reset) with this stored secret when the link comes up. That user
    /// (or `admin` when there is none) is the one allowed to manage users.
    pub bootstrap: Option<(String, String)>,
    /// How hard secrets stored through user management are hashed.
    pub hash_cost: auth::HashCost,
    /// Failed logins allowed per client address (none: no limit). Checked before any lookup or
    /// hashing, so a flood of wrong secrets costs the server next to nothing.
    pub login_limit: Option<engine::RateLimiter>,
    /// Failed logins allowed per client address whatever the user (none: no limit): a spray
    /// over many user names from one address, each costing the server a hash, stops here.
    pub login_spray_limit: Option<engine::RateLimiter>,
    /// Users whose older tokens are refused (removed or re-keyed), as this instance knows
    /// them: its own changes at once, the other instances' through db-server's notices.
    pub revocations: auth::Revocations,
}

impl AuthConfig {
    /// The user allowed to manage users.
    pub fn admin(&self) -> &str {
        self.bootstrap.as_ref().map_or("admin", |(name, _)| name)
    }

    /// Takes a login attempt of `user` from `ip` (none: unknown, not limited) out of both
    /// buckets, the address's and the address and user's: false when either is empty (the
    /// attempt is refused before any lookup or hash).
    pub fn login_allowed(&self, ip: Option<std::net::IpAddr>, user: &str) -> bool {
        let Some(ip) = ip else {
            return true;
        };
        let now = std::time::Instant::now();
        if let Some(spray) = &self.login_spray_limit {
            if !spray.allow(ip, now) {
                return false;
            }
        }
        match &self.login_limit {
            Some(l) if !l.allow_keyed(ip, login_key(user), now) => {
                if let Some(spray) = &self.login_spray_limit {
                    spray.refund(ip);
                }
                false
            }
            _ => true,
        }
    }

    /// Gives back what [`AuthConfig::login_allowed`] took: the attempt did not fail on a
    /// wrong secret.
    pub fn login_refund(&self, ip: Option<std::net::IpAddr>, user: &str) {
        let Some(ip) = ip else {
            return;
        };
        if let Some(spray) = &self.login_spray_limit {
            spray.refund(ip);
        }
        if let Some(l) = &self.login_limit {
            l.refund_keyed(ip, login_key(user));
        }
    }
}

/// The login limiter's key for `user` (with the address: one bucket per address and user).
fn login_key(user: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(user)
}

/// When the server pings its clients and gives up on them (docs/protocol.md, liveness).
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Between pings.
    pub interval: Duration,
    /// The first ping comes after a random delay in this range, so that clients that
    /// connected together are not pinged together.
    pub first: (Duration, Duration),
    /// A client that has not answered a ping this long after it was sent is disconnected
    /// (more than an hour counts as an hour).
    pub timeout: Duration,
}

impl Default for Liveness {
    /// Every 30 s, the first after 1–59 s, disconnect after 90 s without an answer.
    fn default() -> Self {
        Liveness {
            interval: Duration::from_secs(30),
            first: (Duration::from_secs(1), Duration::from_secs(59)),
            timeout: Duration::from_secs(90),
        }
    }
}

/// Ping round trips of every connection: a Prometheus summary's sum and count.
#[derive(Debug, Default)]
pub struct RttTotals {
    /// Sum of the round trips, µs.
    pub sum_us: AtomicU64,
    /// Round trips measured.
    pub count: AtomicU64,
    /// Round trips by duration: one count per bound of [`RTT_BOUNDS_US`] (≤ bound) and a last
    /// one for longer ones (not cumulative), for percentiles.
    pub buckets: [AtomicU64; RTT_BOUNDS_US.len() + 1],
}

/// Upper bounds (µs) of the round-trip histogram of [`RttTotals`].
pub const RTT_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

impl RttTotals {
    /// Counts one round trip of `us` µs.
    pub fn record(&self, us: u64) {
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let i = RTT_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(RTT_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The histogram's counts now.
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}
