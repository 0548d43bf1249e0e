//! Configuration files: a TOML `[engine]` table (and `[engine.socket]`) mapped onto
//! [`engine::Config`]. Command-line flags are applied after the file, so they win.
//!
//! ```toml
//! [engine]
//! threads = 2
//! max_connections = 10000
//! idle_timeout_secs = 300        # 0 turns it off
//! rate_limit_per_minute = 10     # new connections per IP; 0 turns it off (the default)
//! rate_limit_allow = ["127.0.0.1", "::1"]
//! max_connections_per_ip = 256   # open at once per source address; 0 turns it off
//! max_connections_per_ip_allow = ["10.0.0.5"]   # never limited (a proxy in front)
//!
//! [engine.socket]
//! send_buffer = 262144         # 0 (the default) leaves it to the kernel's autotuning
//! keepalive = true
//! ```
//! Every key is listed in docs/operations.md.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The flags every server shares, flattened into each binary (`#[command(flatten)]`): the
/// engine's own ([`EngineSettings`], declared once for the command line and the file) and the
/// configuration file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub settings: EngineSettings,
    /// TOML configuration file (docs/operations.md, and docs/proxy.md for the proxy's own
    /// tables); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A flag's help with its default appended, `"… [default: 60]"`, so `--help` shows the value the
/// program really uses (taken from its default configuration, not written a second time).
pub fn with_default(help: &str, default: impl std::fmt::Display) -> String {
    format!("{help} [default: {default}]")
}

/// Declares a program's settings once: one struct of `Option` fields that clap reads from the
/// command line and serde from the configuration file (each field's attributes say how), and
/// its `over` method, which lays one source over another (a flag given wins over the file's
/// value; what neither gives stays `None`, for the program's default).
///
/// ```
/// shared::layered! {
///     #[derive(Debug, Default, PartialEq)]
///     pub struct Knobs {
///         pub threads: Option<usize>,
///         pub name: Option<String>,
///     }
/// }
/// let flags = Knobs { threads: Some(2), name: None };
/// let file = Knobs { threads: Some(8), name: Some("x".into()) };
/// assert_eq!(flags.over(file), Knobs { threads: Some(2), name: Some("x".into()) });
/// ```
#[macro_export]
macro_rules! layered {
    (
        $(#[$smeta:meta])*
        $svis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident : Option<$ty:ty>,
            )*
        }
    ) => {
        $(#[$smeta])*
        $svis struct $name {
            $(
                $(#[$fmeta])*
                $fvis $field: Option<$ty>,
            )*
        }

        impl $name {
            /// These settings over `below`'s: each one given here wins; the others come from
            /// `below`.
            #[allow(dead_code)]
            $svis fn over(self, below: Self) -> Self {
                Self {
                    $( $field: self.$field.or(below.$field), )*
                }
            }
        }
    };
}

/// Why a configuration file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid configuration in {path} at line {line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Line of the offending key or value (1-based; 0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is out of its range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

layered! {
    /// The engine's settings, declared once: the `[engine]` table of a configuration file
    /// (serde) and, for the few marked `#[arg(long)]`, the command line (clap). Every key is
    /// optional; what neither gives keeps the program's default (the engine's, see
    /// [`engine::Config`], unless the program sets its own).
    #[derive(Debug, Clone, Default, Deserialize, clap::Args)]
    #[serde(deny_unknown_fields)]
    pub struct EngineSettings {
        /// Event-loop threads [default: the number of cores; db-server: 1].
        #[arg(long)]
        pub threads: Option<usize>,
        #[arg(skip)]
        pub max_message_size: Option<usize>,
        #[arg(skip)]
        pub write_high_water: Option<usize>,
        #[arg(skip)]
        pub write_low_water: Option<usize>,
        #[arg(skip)]
        pub write_hard_cap: Option<usize>,
        /// 0 turns it off.
        #[arg(skip)]
        pub write_timeout_secs: Option<f64>,
        /// 0 turns it off.
        #[arg(skip)]
        pub idle_timeout_secs: Option<f64>,
        #[arg(skip)]
        pub connect_timeout_secs: Option<f64>,
        #[arg(skip)]
        pub shutdown_grace_secs: Option<f64>,
        #[arg(skip)]
        pub tls_handshake_timeout_secs: Option<f64>,
        /// Most connections open at once [default: open-file limit less 64].
        #[arg(long)]
        pub max_connections: Option<usize>,
        /// New connections per minute per IP (the bucket size); 0 turns the limit off.
        #[arg(skip)]
        pub rate_limit_per_minute: Option<u32>,
        #[arg(skip)]
        pub rate_limit_allow: Option<Vec<IpAddr>>,
        /// Most connections one source address may hold open at once; 0 = no limit [default:
        /// test-server 256, the others none]. A proxy in front carries many clients'
        /// connections: list it in the file's max_connections_per_ip_allow.
        #[arg(long, value_name = "N")]
        pub max_connections_per_ip: Option<usize>,
        #[arg(skip)]
        pub max_connections_per_ip_allow: Option<Vec<IpAddr>>,
        #[arg(skip)]
        pub backlog: Option<i32>,
        #[arg(skip)]
        pub socket: Option<SocketSettings>,
    }
}

/// The `[engine.socket]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketSettings {
    pub nodelay: Option<bool>,
    pub keepalive: Option<bool>,
    pub keepalive_idle_secs: Option<f64>,
    pub keepalive_interval_secs: Option<f64>,
    pub keepalive_retries: Option<u32>,
    pub reuse_address: Option<bool>,
    /// 0 leaves the kernel default.
    pub recv_buffer: Option<usize>,
    /// 0 leaves the kernel default.
    pub send_buffer: Option<usize>,
    /// 0 turns it off.
    pub user_timeout_secs: Option<f64>,
    /// Unset: normal close; 0: reset on close.
    pub linger_secs: Option<f64>,
}

/// A whole configuration file. Programs read their own tables besides `[engine]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct File {
    #[serde(default)]
    pub engine: EngineSettings,
}

/// Parses a TOML file into `T`.
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, SettingsError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: name.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| SettingsError::Parse {
        path: name,
        line: e.span().map_or(0, |sp| {
            text[..sp.start.min(text.len())].matches('\n').count() + 1
        }),
        message: e.message().trim().to_string(),
    })
}

/// `v` seconds as a duration; negative, NaN or too large is an error naming `key`. The one
/// parser of durations for flags and configuration files.
pub fn secs(v: f64, key: &str) -> Result<Duration, SettingsError> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| SettingsError::Invalid(format!("{key} must be a number of seconds ≥ 0")))
}

fn opt_secs(v: f64, key: &str) -> Result<Option<Duration>, SettingsError> {
    Ok(Some(secs(v, key)?).filter(|d| !d.is_zero()))
}

impl EngineSettings {
    /// Writes every key present onto `cfg`.
    pub fn apply(&self, cfg: &mut engine::Config) -> Result<(), SettingsError> {
        if let Some(v) = self.threads {
            cfg.threads = v.max(1);
        }
        if let Some(v) = self.max_message_size {
            cfg.max_message_size = v;
        }
        if let Some(v) = self.write_high_water {
            cfg.write_high_water = v;
        }
        if let Some(v) = self.write_low_water {
            cfg.write_low_water = v;
        }
        if let Some(v) = self.write_hard_cap {
            cfg.write_hard_cap = v;
        }
        if let Some(v) = self.write_timeout_secs {
            cfg.write_timeout = opt_secs(v, "write_timeout_secs")?;
        }
        if let Some(v) = self.idle_timeout_secs {
            cfg.idle_timeout = opt_secs(v, "idle_timeout_secs")?;
        }
        if let Some(v) = self.connect_timeout_secs {
            cfg.connect_timeout = secs(v, "connect_timeout_secs")?;
        }
        if let Some(v) = self.shutdown_grace_secs {
            cfg.shutdown_grace = secs(v, "shutdown_grace_secs")?;
        }
        if let Some(v) = self.tls_handshake_timeout_secs {
            cfg.tls_handshake_timeout = secs(v, "tls_handshake_timeout_secs")?;
        }
        if let Some(v) = self.max_connections {
            cfg.limits.max_connections = Some(v);
        }
        if let Some(n) = self.rate_limit_per_minute {
            set_rate_limit(cfg, n);
        }
        if let (Some(allow), Some(rate)) = (&self.rate_limit_allow, cfg.limits.rate.as_mut()) {
            rate.allow.clone_from(allow);
        }
        if let Some(n) = self.max_connections_per_ip {
            cfg.limits.per_ip = (n > 0).then(|| engine::PerIpLimit {
                max: n,
                allow: cfg
                    .limits
                    .per_ip
                    .as_ref()
                    .map(|l| l.allow.clone())
                    .unwrap_or_default(),
            });
        }
        if let (Some(allow), Some(l)) = (
            &self.max_connections_per_ip_allow,
            cfg.limits.per_ip.as_mut(),
        ) {
            l.allow.clone_from(allow);
        }
        if let Some(v) = self.backlog {
            cfg.backlog = v;
        }
        if let Some(s) = &self.socket {
            s.apply(&mut cfg.socket)?;
        }
        // The engine's own invariants, checked where it keeps them, reported at start-up with
        // the file's other mistakes.
        cfg.validate().map_err(|e| SettingsError::Invalid(e.0))
    }
}

/// Raises the open-file soft limit to the hard limit (as nginx and Redis do at start), so the
/// default connection limit is what the system allows; a server calls it once before building
/// its engine. A failure is logged and the server goes on with the limit it has.
pub fn raise_open_file_limit() {
    match engine::raise_open_file_limit() {
        Ok(n) => log::debug!("open-file limit {n}"),
        Err(e) => log::warn!("cannot raise the open-file limit ({e}); keeping the current one"),
    }
}

/// The engine configuration of a program: defaults, then the `[engine]` table of `file` (if
/// given), then `flags` (the command line), each overriding the one before.
pub fn engine_config(
    file: Option<&Path>,
    flags: &EngineSettings,
) -> Result<engine::Config, SettingsError> {
    engine_config_from(engine::Config::default(), file, flags)
}

/// [`engine_config`] over a program's own defaults (`base`) rather than the engine's: the
/// flags laid over the file's table, applied once (so a program's default, e.g. db-server's
/// one thread, gives way to the file as it does to a flag).
pub fn engine_config_from(
    base: engine::Config,
    file: Option<&Path>,
    flags: &EngineSettings,
) -> Result<engine::Config, SettingsError> {
    let from_file = match file {
        Some(path) => load::<File>(path)?.engine,
        None => EngineSettings::default(),
    };
    let mut cfg = base;
    flags.clone().over(from_file).apply(&mut cfg)?;
    Ok(cfg)
}

/// Turns the per-IP limit on with `per_minute` new connections a minute, or off with 0.
pub fn set_rate_limit(cfg: &mut engine::Config, per_minute: u32) {
    cfg.limits.rate = (per_minute > 0).then(|| engine::RateLimit {
        burst: per_minute,
        per: Duration::from_secs(60),
        ..cfg.limits.rate.clone().unwrap_or_default()
    });
}

impl SocketSettings {
    fn apply(&self, s: &mut engine::SocketOptions) -> Result<(), SettingsError> {
        if let Some(v) = self.nodelay {
            s.nodelay = v;
        }
        if self.keepalive == Some(false) {
            s.keepalive = None;
        } else {
            let mut k = s.keepalive.unwrap_or(engine::Keepalive {
                idle: Duration::from_secs(30),
                interval: Duration::from_secs(10),
                retries: 9,
            });
            if let Some(v) = self.keepalive_idle_secs {
                k.idle = secs(v, "keepalive_idle_secs")?;
            }
            if let Some(v) = self.keepalive_interval_secs {
                k.interval = secs(v, "keepalive_interval_secs")?;
            }
            if let Some(v) = self.keepalive_retries {
                k.retries = v;
            }
            s.keepalive = Some(k);
        }
        if let Some(v) = self.reuse_address {
            s.reuse_address = v;
        }
        if let Some(v) = self.recv_buffer {
            s.recv_buffer = (v > 0).then_some(v);
        }
        if let Some(v) = self.send_buffer {
            s.send_buffer = (v > 0).then_some(v);
        }
        if let Some(v) = self.user_timeout_secs {
            s.user_timeout = opt_secs(v, "user_timeout_secs")?;
        }
        if let Some(v) = self.linger_secs {
            s.linger = Some(secs(v, "linger_secs")?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_land_in_the_engine_config() {
        let f: File = toml::from_str(
            r#"
            [engine]
            threads = 3
            idle_timeout_secs = 1.5
            write_timeout_secs = 0
            rate_limit_per_minute = 10
            rate_limit_allow = ["10.0.0.1"]
            [engine.socket]
            keepalive = false
            send_buffer = 0
            "#,
        )
        .unwrap();
        let mut cfg = engine::Config::default();
        f.engine.apply(&mut cfg).unwrap();
        assert_eq!(cfg.threads, 3);
        assert_eq!(cfg.idle_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(cfg.write_timeout, None);
        let rate = cfg.limits.rate.unwrap();
        assert_eq!(
            (rate.burst, rate.allow),
            (10, vec!["10.0.0.1".parse::<IpAddr>().unwrap()])
        );
        assert!(cfg.socket.keepalive.is_none());
        assert_eq!(cfg.socket.send_buffer, None);
    }

    #[test]
    fn a_programs_default_gives_way_to_the_file_and_flags_win_over_both() {
        let dir = std::env::temp_dir().join(format!("netmod-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[engine]\nthreads = 4\nmax_connections = 50\n").unwrap();
        let mut base = engine::Config::default();
        base.threads = 1;
        let cfg =
            engine_config_from(base.clone(), Some(&path), &EngineSettings::default()).unwrap();
        assert_eq!((cfg.threads, cfg.limits.max_connections), (4, Some(50)));
        let flags = EngineSettings {
            threads: Some(2),
            ..EngineSettings::default()
        };
        let cfg = engine_config_from(base.clone(), Some(&path), &flags).unwrap();
        assert_eq!((cfg.threads, cfg.limits.max_connections), (2, Some(50)));
        assert_eq!(
            engine_config_from(base, None, &EngineSettings::default())
                .unwrap()
                .threads,
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<File>("[engine]\nthreadz = 2\n").is_err());
        let f: File = toml::from_str("[engine]\nidle_timeout_secs = -1\n").unwrap();
        assert!(f.engine.apply(&mut engine::Config::default()).is_err());
    }
}
