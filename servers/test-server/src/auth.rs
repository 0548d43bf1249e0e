//! Authentication primitives shared by every test-server instance: signed, expiring tokens and
//! stored secrets.
//!
//! A token is `nm1.<payload>.<mac>` (base64url, no padding): the payload is the expiry (seconds
//! since the Unix epoch, 8 bytes big-endian) followed by the user name, and the MAC is
//! HMAC-SHA256 over a version label and the payload, keyed with the secret all instances share
//! (`--token-secret`). Any instance can so check a token another one issued, and a restart loses
//! nothing. Checking compares MACs in constant time.
//!
//! Secrets are stored as argon2id PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`,
//! a random 16-byte salt; OWASP's parameters), compared in constant time. Secrets stored by
//! earlier versions as `pbkdf2-sha256$<iterations>$<salt>$<hash>` still verify.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use test_server::auth::{AuthError, TokenSigner};
//!
//! let signer = TokenSigner::new(b"shared by every instance", Duration::from_secs(3600));
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let token = signer.issue("alice", now).unwrap();
//! assert_eq!(signer.verify(&token.token, now).unwrap().user, "alice");
//! let later = now + Duration::from_secs(3601);
//! assert_eq!(signer.verify(&token.token, later), Err(AuthError::Expired));
//! ```

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a token or a login was refused. Every kind answers `UNAUTHENTICATED`; the kind goes to
/// the log and the message, never more than that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a token of this format (or not one at all).
    #[error("malformed token")]
    Malformed,
    /// The MAC does not match: made or changed by someone without the secret.
    #[error("token signature does not match")]
    Forged,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// A user name outside `[A-Za-z0-9_.@-]{1,64}`.
    #[error("invalid user name")]
    BadUser,
    /// The stored secret is not in a format this version reads.
    #[error("stored secret unreadable")]
    BadStoredSecret,
    /// Issued before its user was removed or re-keyed (see [`Revocations`]).
    #[error("token revoked: the user was removed or its secret changed")]
    Revoked,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user it was issued to.
    pub user: String,
    /// When it stops being valid, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A token as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The text a client presents.
    pub token: String,
    /// When it stops being valid, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Default token lifetime (docs/operations.md).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

const PREFIX: &str = "nm1.";
const LABEL: &[u8] = b"netmod-token-v1\0";

/// True for user names tokens and the user table accept.
pub fn valid_user(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

use shared::clock::secs_since_epoch as secs;

/// Issues and checks tokens with one shared key.
#[derive(Clone)]
pub struct TokenSigner {
    mac: HmacSha256,
    lifetime: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TokenSigner")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer keyed with `secret` (any length; use at least 32 random bytes) issuing tokens
    /// valid for `lifetime`.
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        // HMAC takes keys of any length; this cannot fail.
        let mac = <HmacSha256 as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        TokenSigner { mac, lifetime }
    }

    fn sign(&self, payload: &[u8]) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(LABEL);
        m.update(payload);
        m
    }

    /// A token for `user`, valid from `now` for the signer's lifetime.
    pub fn issue(&self, user: &str, now: SystemTime) -> Result<Token, AuthError> {
        self.issue_from(user, secs(now))
    }

    /// A token for `user` issued as of second `issued` (since the Unix epoch): it expires
    /// one lifetime later. (See [`Revocations::issue_second`].)
    pub fn issue_from(&self, user: &str, issued: u64) -> Result<Token, AuthError> {
        if !valid_user(user) {
            return Err(AuthError::BadUser);
        }
        let expires_at = issued.saturating_add(self.lifetime.as_secs());
        let mut payload = Vec::with_capacity(8 + user.len());
        payload.extend_from_slice(&expires_at.to_be_bytes());
        payload.extend_from_slice(user.as_bytes());
        let mac = self.sign(&payload).finalize().into_bytes();
        Ok(Token {
            token: format!("{PREFIX}{}.{}", B64.encode(&payload), B64.encode(mac)),
            expires_at,
        })
    }

    /// How long the tokens it issues are valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The second a token expiring at `expires_at` was issued (every instance shares the
    /// lifetime, as it shares the key).
    pub fn issued_at(&self, expires_at: u64) -> u64 {
        expires_at.saturating_sub(self.lifetime.as_secs())
    }

    /// Checks `token` at `now`: well-formed, signed with this key, not expired.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, AuthError> {
        let rest = token.strip_prefix(PREFIX).ok_or(AuthError::Malformed)?;
        let (p, m) = rest.split_once('.').ok_or(AuthError::Malformed)?;
        // Bounded before decoding: a token is never long.
        if p.len() > 128 || m.len() > 64 {
            return Err(AuthError::Malformed);
        }
        let payload = B64.decode(p).map_err(|_| AuthError::Malformed)?;
        let mac = B64.decode(m).map_err(|_| AuthError::Malformed)?;
        if payload.len() < 9 {
            return Err(AuthError::Malformed);
        }
        // Constant-time comparison inside `verify_slice`.
        self.sign(&payload)
            .verify_slice(&mac)
            .map_err(|_| AuthError::Forged)?;
        let (exp, user) = payload.split_at(8);
        let mut e = [0u8; 8];
        e.copy_from_slice(exp);
        let expires_at = u64::from_be_bytes(e);
        if secs(now) >= expires_at {
            return Err(AuthError::Expired);
        }
        let user = String::from_utf8(user.to_vec()).map_err(|_| AuthError::Malformed)?;
        Ok(Claims { user, expires_at })
    }
}

/// Users whose tokens issued before a second are refused. Tokens say when they expire, to the
/// second, so a revocation works in whole seconds: each one (a user removed or re-keyed at
/// `t`) moves the user's *first good second* past `t`'s second and past the previous first good
/// second, and a token is good only if issued at or after it. A login right after a change
/// gets a token issued as of that first good second (so it is good, and any token issued
/// before the change is not, even within the same second). Every instance folds the same rows
/// (the table `_netmod_revocations`, which each one watches) the same way, so a token refused
/// on one is refused on all.
///
/// ```
/// use test_server::auth::Revocations;
/// let r = Revocations::default();
/// r.apply("bob", 1_700_000_000_400); // ms
/// assert!(r.revoked("bob", 1_700_000_000)); // issued that same second, before or after
/// assert!(!r.revoked("bob", 1_700_000_001));
/// assert!(!r.revoked("alice", 1_700_000_000));
/// // A login right after the change gets a token issued from the first good second...
/// assert_eq!(r.issue_second("bob", 1_700_000_000), 1_700_000_001);
/// // ...which the next change, even within the same second, revokes too.
/// r.apply("bob", 1_700_000_000_900);
/// assert!(r.revoked("bob", 1_700_000_001));
/// assert_eq!(Revocations::fold([1_700_000_000_400, 1_700_000_000_900]), 1_700_000_002);
/// ```
#[derive(Debug, Default)]
pub struct Revocations {
    /// User → its revocations (ms), and the first second whose tokens are still good.
    from: std::sync::RwLock<std::collections::HashMap<String, Revoked>>,
}

#[derive(Debug, Default)]
struct Revoked {
    ats: std::collections::BTreeSet<u64>,
    first_good: u64,
}

impl Revoked {
    /// Takes in revocations made at `ats`; true when the first good second moved.
    fn add(&mut self, ats: impl IntoIterator<Item = u64>) -> bool {
        let before = self.ats.len();
        self.ats.extend(ats);
        if self.ats.len() == before {
            return false;
        }
        let folded = Revocations::fold(self.ats.iter().copied());
        let moved = folded > self.first_good;
        self.first_good = self.first_good.max(folded);
        moved
    }
}

impl Revocations {
    fn step(first_good: u64, at_ms: u64) -> u64 {
        (at_ms / 1000 + 1).max(first_good + 1)
    }

    /// The first good second after revocations at `ats` (milliseconds since the Unix epoch,
    /// in the order they were made).
    pub fn fold(ats: impl IntoIterator<Item = u64>) -> u64 {
        ats.into_iter().fold(0, Revocations::step)
    }

    /// Applies one revocation of `user` made at `at_ms` (this instance's own change; the
    /// same row read back from the table later changes nothing).
    pub fn apply(&self, user: &str, at_ms: u64) -> bool {
        self.merge(user, [at_ms])
    }

    /// Takes in `user`'s revocations read from the table (ms). True when its first good
    /// second moved.
    pub fn merge(&self, user: &str, ats: impl IntoIterator<Item = u64>) -> bool {
        let mut m = match self.from.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(user.to_string()).or_default().add(ats)
    }

    /// True when a token of `user` issued at second `issued` is revoked.
    pub fn revoked(&self, user: &str, issued: u64) -> bool {
        let m = match self.from.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.get(user).is_some_and(|r| issued < r.first_good)
    }

    /// The second a token issued now (`now`, in seconds) should say: now, or the first good
    /// second of a revocation made this very second.
    pub fn issue_second(&self, user: &str, now: u64) -> u64 {
        let m = match self.from.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.get(user).map_or(now, |r| now.max(r.first_good))
    }
}

/// How hard new secrets are hashed: argon2id with `memory_kib` KiB of memory and `passes`
/// passes over it, one lane. Logins are rare next to requests, and each runs off the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory per hash, in KiB (at least 8).
    pub memory_kib: u32,
    /// Passes over the memory (at least 1).
    pub passes: u32,
}

impl HashCost {
    /// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane (about 30 ms here).
    pub const DEFAULT: HashCost = HashCost {
        memory_kib: 19 * 1024,
        passes: 2,
    };
    /// Cheap, for tests only.
    pub const TEST: HashCost = HashCost {
        memory_kib: 64,
        passes: 1,
    };
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost::DEFAULT
    }
}

/// Why a secret could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// No randomness for the salt.
    #[error("no randomness for a salt: {0}")]
    Random(getrandom::Error),
    /// The cost is out of argon2's range.
    #[error("argon2: {0}")]
    Argon2(String),
}

fn argon2(cost: HashCost) -> Result<argon2::Argon2<'static>, HashError> {
    let params = argon2::Params::new(cost.memory_kib, cost.passes, 1, Some(32))
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// The stored form of `secret`: an argon2id PHC string with a fresh salt.
pub fn hash_secret(secret: &str, cost: HashCost) -> Result<String, HashError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    let hash = argon2(cost)?
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(hash.to_string())
}

/// Costs above these in a stored secret are refused (a corrupted or hostile row must not make a
/// verifier thread allocate gigabytes or spin for minutes).
const MAX_MEMORY_KIB: u64 = 256 * 1024;
const MAX_PASSES: u64 = 64;

/// Iterations above this in a stored secret are refused (a corrupted or hostile row must not
/// stall a worker).
const MAX_ITERATIONS: u32 = 10_000_000;

/// True when `secret` matches the stored form made by [`hash_secret`] — or by earlier versions'
/// PBKDF2 (compared in constant time either way).
pub fn verify_secret(secret: &str, stored: &str) -> Result<bool, AuthError> {
    if stored.starts_with("$argon2id$") {
        return verify_argon2(secret, stored);
    }
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(iter), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(AuthError::BadStoredSecret);
    };
    let iterations: u32 = iter.parse().map_err(|_| AuthError::BadStoredSecret)?;
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(AuthError::BadStoredSecret);
    }
    let salt = B64.decode(salt).map_err(|_| AuthError::BadStoredSecret)?;
    let want = B64.decode(hash).map_err(|_| AuthError::BadStoredSecret)?;
    if want.len() != 32 {
        return Err(AuthError::BadStoredSecret);
    }
    let mut got = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), &salt, iterations, &mut got);
    Ok(bool::from(got.ct_eq(want.as_slice())))
}

fn verify_argon2(secret: &str, stored: &str) -> Result<bool, AuthError> {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let hash = PasswordHash::new(stored).map_err(|_| AuthError::BadStoredSecret)?;
    let within = |name: &str, max: u64| {
        hash.params
            .get_decimal(name)
            .is_some_and(|v| v >= 1 && u64::from(v) <= max)
    };
    if !(within("m", MAX_MEMORY_KIB) && within("t", MAX_PASSES) && within("p", 1)) {
        return Err(AuthError::BadStoredSecret);
    }
    match argon2(HashCost::DEFAULT)
        .map_err(|_| AuthError::BadStoredSecret)?
        .verify_password(secret.as_bytes(), &hash)
    {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(AuthError::BadStoredSecret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_token_from_one_signer_is_valid_on_another_with_the_same_secret() {
        let a = TokenSigner::new(b"k", DEFAULT_LIFETIME);
        let b = TokenSigner::new(b"k", DEFAULT_LIFETIME);
        let t = a.issue("bob@example.com", at(1000)).unwrap();
        assert_eq!(t.expires_at, 1000 + 3600);
        let c = b.verify(&t.token, at(4599)).unwrap();
        assert_eq!(c.user, "bob@example.com");
        assert_eq!(b.verify(&t.token, at(4600)), Err(AuthError::Expired));
        let other = TokenSigner::new(b"other key", DEFAULT_LIFETIME);
        assert_eq!(other.verify(&t.token, at(1000)), Err(AuthError::Forged));
    }

    #[test]
    fn tampered_and_malformed_tokens_are_refused() {
        let s = TokenSigner::new(b"k", DEFAULT_LIFETIME);
        let t = s.issue("eve", at(0)).unwrap().token;
        // Another user name under the same MAC.
        let (head, mac) = t.rsplit_once('.').unwrap();
        let mut payload = B64.decode(head.strip_prefix(PREFIX).unwrap()).unwrap();
        *payload.last_mut().unwrap() = b'a';
        let forged = format!("{PREFIX}{}.{mac}", B64.encode(&payload));
        assert_eq!(s.verify(&forged, at(1)), Err(AuthError::Forged));
        // A later expiry under the same MAC.
        payload[0] = 0xff;
        let forged = format!("{PREFIX}{}.{mac}", B64.encode(&payload));
        assert_eq!(s.verify(&forged, at(1)), Err(AuthError::Forged));
        for bad in [
            "",
            "nm1.",
            "nm1..",
            "nm1.AAAA.AAAA",
            "x.y.z",
            "nm1.!!.??",
            &t[..t.len() - 2],
        ] {
            assert!(s.verify(bad, at(1)).is_err(), "{bad:?}");
        }
        let long = format!("{PREFIX}{}.{}", "A".repeat(10_000), "B".repeat(10_000));
        assert_eq!(s.verify(&long, at(1)), Err(AuthError::Malformed));
    }

    #[test]
    fn user_names_are_checked() {
        let s = TokenSigner::new(b"k", DEFAULT_LIFETIME);
        for bad in ["", "a b", "a\nb", &"x".repeat(65), "é"] {
            assert_eq!(s.issue(bad, at(0)), Err(AuthError::BadUser), "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_salted_argon2id_and_checked() {
        let h1 = hash_secret("correct horse", HashCost::TEST).unwrap();
        let h2 = hash_secret("correct horse", HashCost::TEST).unwrap();
        assert!(h1.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h1}");
        assert_ne!(h1, h2, "a fresh salt each time");
        assert_eq!(verify_secret("correct horse", &h1), Ok(true));
        assert_eq!(verify_secret("correct horse!", &h1), Ok(false));
        assert_eq!(verify_secret("", &h2), Ok(false));
        for bad in [
            "",
            "plain",
            "pbkdf2-sha256$0$AA$AA",
            "pbkdf2-sha256$99999999$AA$AA",
            "md5$1$a$b",
            "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=64,t=1000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=64,t=1,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$garbage",
        ] {
            assert_eq!(
                verify_secret("x", bad),
                Err(AuthError::BadStoredSecret),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn secrets_stored_with_pbkdf2_by_earlier_versions_still_verify() {
        // pbkdf2-sha256, 1000 iterations, salt "salt-salt-salt-s", secret "correct horse".
        let mut out = [0u8; 32];
        let salt = b"salt-salt-salt-s";
        pbkdf2::pbkdf2_hmac::<Sha256>(b"correct horse", salt, 1000, &mut out);
        let stored = format!(
            "pbkdf2-sha256$1000${}${}",
            B64.encode(salt),
            B64.encode(out)
        );
        assert_eq!(verify_secret("correct horse", &stored), Ok(true));
        assert_eq!(verify_secret("wrong", &stored), Ok(false));
    }
}
