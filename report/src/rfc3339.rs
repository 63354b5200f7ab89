//! RFC 3339 (UTC, microsecond precision) rendering of stored timestamps, the one time
//! format of the control API and the report.

use fetchgate_storage::Timestamp;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `2026-11-23T02:05:31.123456Z`.
pub fn format(t: Timestamp) -> String {
    let nanos = i128::from(t.as_micros()) * 1000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|dt| dt.format(&Rfc3339).ok())
        // Only a timestamp beyond year 9999 gets here; none is ever stored.
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
}

/// Parses an RFC 3339 time (any offset) back into a timestamp.
pub fn parse(s: &str) -> Option<Timestamp> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1000)
        .ok()
        .map(Timestamp::from_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_subsecond_precision() {
        let t = Timestamp::from_micros(1_795_000_000_123_456);
        let s = format(t);
        assert_eq!(s, "2026-11-18T11:06:40.123456Z");
        assert_eq!(parse(&s), Some(t));
    }

    #[test]
    fn parse_refuses_garbage() {
        assert_eq!(parse("yesterday"), None);
    }
}
