//! RFC 3339 timestamps in UTC, for the access log and `switchyard node list`, without a
//! time-zone database or a date crate.

/// Unix milliseconds as `2026-11-23T15:06:36.123Z`; with `always_millis: false` the
/// fraction is left out when it is zero (`2026-11-23T15:06:36Z`).
pub fn rfc3339(unix_ms: u64, always_millis: bool) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    if millis == 0 && !always_millis {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0, true), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000_123, true), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339(951_782_400_000, false), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_732_312_345_000, false), "2024-11-22T21:52:25Z");
    }
}
