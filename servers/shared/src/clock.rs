//! Wall-clock time as the programs store and compare it: whole seconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now (0 if the clock is set before 1970).
pub fn now_secs() -> u64 {
    secs_since_epoch(SystemTime::now())
}

/// Seconds since the Unix epoch at `t` (0 before 1970).
pub fn secs_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes `secs` (since the epoch) as an HTTP date (RFC 9110 §5.6.7, IMF-fixdate), e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`, into `out` (cleared first) without allocating once `out`
/// has room for 29 bytes.
///
/// ```
/// let mut s = String::new();
/// shared::clock::http_date(784111777, &mut s);
/// assert_eq!(s, "Sun, 06 Nov 1994 08:49:37 GMT");
/// ```
pub fn http_date(secs: u64, out: &mut String) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    out.clear();
    let two = |out: &mut String, n: u64| {
        out.push(char::from(b'0' + (n / 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    out.push_str(DAYS[(days % 7) as usize]);
    out.push_str(", ");
    two(out, day as u64);
    out.push(' ');
    out.push_str(MONTHS[(month - 1) as usize]);
    out.push(' ');
    let y = year.max(0) as u64;
    two(out, y / 100 % 100);
    two(out, y % 100);
    out.push(' ');
    two(out, rem / 3600);
    out.push(':');
    two(out, rem / 60 % 60);
    out.push(':');
    two(out, rem % 60);
    out.push_str(" GMT");
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_match_chrono_across_leap_years_and_centuries() {
        let mut s = String::new();
        for secs in (0..4_102_444_800u64).step_by(86_400 * 37 + 3_607) {
            super::http_date(secs, &mut s);
            let t = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap();
            assert_eq!(
                s,
                t.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                "{secs}"
            );
        }
    }
}
