//! Log output in the original design's format: `[2024-11-21 14:30:20][INFO] message`.
//!
//! Per-request lines (the access log `Client IP: …`, `New connection from …`, `Selected backend
//! server …`) keep the original format and level but go to the [`ACCESS`] target, which the
//! default filter shows only at WARN and above: by default a 404 or a 5xx is logged (ERROR, as
//! the original design has it) and a success costs nothing. `RUST_LOG=info` shows them all.
//!
//! Per-request lines name the program that wrote them after the level
//! (`[2024-11-21 14:30:20][INFO][proxy] Client IP: …`), so that the lines of a proxy and of the
//! test-server behind it, written to one terminal, can be told apart. On a terminal the level is
//! coloured; in a file or a pipe nothing but text is written.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

/// The log target of per-request lines.
pub const ACCESS: &str = "access";

/// The filter used when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,access=warn";

static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Installs the logger for `program` (named on per-request lines): filter from `RUST_LOG` (e.g.
/// `info`, `debug`, `engine=debug`), [`DEFAULT_FILTER`] when unset; lines go to standard error,
/// the level coloured when that is a terminal.
pub fn init(program: &'static str) {
    let _ = PROGRAM.set(program);
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER))
            .format(|buf, record| {
                let style = buf.default_level_style(record.level());
                let level = record.level();
                timestamp(|ts| match (record.target(), PROGRAM.get()) {
                    (ACCESS, Some(program)) => writeln!(
                        buf,
                        "[{ts}][{style}{level}{style:#}][{program}] {}",
                        record.args()
                    ),
                    _ => writeln!(buf, "[{ts}][{style}{level}{style:#}] {}", record.args()),
                })
            })
            .try_init();
}

/// Calls `f` with the local time as `2024-11-21 14:30:20`, formatted once per second per
/// thread (reading the local time zone and formatting on every line cost more than the line).
fn timestamp<R>(f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let secs = crate::clock::now_secs() as i64;
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            last.1.clear();
            let now = chrono::Local::now();
            let _ = fmt::Write::write_fmt(
                &mut last.1,
                format_args!("{}", now.format("%Y-%m-%d %H:%M:%S")),
            );
            last.0 = secs;
        }
        f(&last.1)
    })
}

/// Bytes from the wire as they may appear in a log line: printable ASCII as is, everything else
/// (CR, LF, other control bytes, non-ASCII) as `\xNN`, so that nothing a peer sends can forge a
/// line or smuggle terminal escapes into the log. At most `max` bytes are shown, then `…`.
///
/// ```
/// use shared::logging::Printable;
/// let shown = Printable::new(b"ok\r\n[INFO] forged", 200).to_string();
/// assert_eq!(shown, "ok\\x0d\\x0a[INFO] forged");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Printable<'a> {
    bytes: &'a [u8],
    cut: bool,
}

impl<'a> Printable<'a> {
    /// The first `max` bytes of `bytes`, escaped when displayed.
    pub fn new(bytes: &'a [u8], max: usize) -> Self {
        Printable {
            bytes: &bytes[..bytes.len().min(max)],
            cut: bytes.len() > max,
        }
    }
}

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.bytes;
        while !rest.is_empty() {
            let plain = rest
                .iter()
                .position(|&b| !(b == b' ' || b.is_ascii_graphic()) || b == b'\\')
                .unwrap_or(rest.len());
            // invariant: the run holds ASCII only, so it is UTF-8.
            f.write_str(std::str::from_utf8(&rest[..plain]).unwrap_or_default())?;
            if let Some(&b) = rest.get(plain) {
                write!(f, "\\x{b:02x}")?;
                rest = &rest[plain + 1..];
            } else {
                rest = &[];
            }
        }
        if self.cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Printable;

    #[test]
    fn wire_bytes_cannot_forge_log_lines() {
        let raw = b"a\r\n[2024-11-21 14:30:20][INFO] x\x1b[31m\xff\\";
        let shown = Printable::new(raw, 200).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\x1b'));
        assert_eq!(
            shown,
            "a\\x0d\\x0a[2024-11-21 14:30:20][INFO] x\\x1b[31m\\xff\\x5c"
        );
        assert_eq!(Printable::new(b"abcdef", 3).to_string(), "abc…");
    }
}
