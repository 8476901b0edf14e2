//! Unix nanoseconds as UTC text: `YYYY-MM-DDTHH:MM:SS.mmmZ` (how entries' append times are
//! shown, and how the Converge adapter stamps events).

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix nanoseconds.
pub fn utc_millis(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = (ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc_millis;

    #[test]
    fn known_answers() {
        assert_eq!(utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc_millis(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            utc_millis(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            utc_millis(951_782_400_005_000_000),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            utc_millis(1_767_225_599_999_000_000),
            "2025-12-31T23:59:59.999Z"
        );
    }
}
