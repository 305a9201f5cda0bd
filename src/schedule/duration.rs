//! Human durations (`500ms`, `90s`, `1h30m`, `14d`, `2w`) and RFC 3339 instants.
//!
//! One grammar for every duration a user types: schedule files, the config,
//! and CLI flags. Units run from `ms` to `w`; a day is always 24 hours and a
//! week 7 days, because these durations measure real elapsed time (an
//! interval never sees DST).

use std::fmt;

use chrono::{DateTime, Duration, Utc};

/// Why a duration or instant could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty duration; write e.g. \"30s\", \"15m\", \"1h30m\", \"14d\"")]
    Empty,
    #[error(
        "invalid duration {0:?}: expected numbers with units ms, s, m, h, d, w (e.g. \"90s\", \"1h30m\", \"2w\")"
    )]
    Syntax(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
    #[error(
        "invalid instant {0:?}: expected RFC 3339 with an offset, e.g. \"2026-12-01T09:00:00Z\" or \"2026-12-01T09:00:00-03:00\""
    )]
    Instant(String),
}

/// Parses a duration such as `90s`, `1h30m` or `2w`. Zero is allowed here;
/// callers that need a positive duration say so themselves.
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(ParseError::Empty);
    }
    let syntax = || ParseError::Syntax(text.to_string());
    let overflow = || ParseError::Overflow(text.to_string());
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: i64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(syntax());
        }
        // Eighteen digits always fit in an i64; longer is overflow, not syntax.
        if i - start > 18 {
            return Err(overflow());
        }
        let value: i64 = s[start..i].parse().map_err(|_| syntax())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let per_unit_ms: i64 = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(syntax()),
        };
        let part = value.checked_mul(per_unit_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
    }
    // chrono's Duration tops out near 2^63 ms; stay well inside so that
    // adding a duration to any realistic instant cannot overflow.
    const MAX_MS: i64 = 100 * 366 * 86_400_000;
    if total_ms > MAX_MS {
        return Err(overflow());
    }
    Ok(Duration::milliseconds(total_ms))
}

/// Formats a duration in the same grammar `parse_duration` reads, largest
/// units first (`1h30m`, `14d`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    DurationDisplay(d).to_string()
}

struct DurationDisplay(Duration);

impl fmt::Display for DurationDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.num_milliseconds();
        if ms < 0 {
            f.write_str("-")?;
            ms = -ms;
        }
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("w", 604_800_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

/// Parses an RFC 3339 instant; an offset is required so that the meaning
/// never depends on the machine's local zone.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, ParseError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|dt| dt.with_timezone(&Utc))
        .map_err(|_| ParseError::Instant(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_from_ms_to_weeks() {
        let cases = [
            ("500ms", 500),
            ("90s", 90_000),
            ("15m", 900_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("14d", 1_209_600_000),
            ("2w", 1_209_600_000),
            ("1m30s250ms", 90_250),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text).unwrap().num_milliseconds(),
                ms,
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            " ",
            "10",
            "s",
            "1x",
            "1.5h",
            "-5s",
            "1h 30m",
            "h1",
            "1H",
            "99999999999999999999s",
            "999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn format_round_trips() {
        for text in ["500ms", "90s", "1h30m", "14d", "2w", "1w1d1h1m1s1ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::seconds(90)), "1m30s");
    }

    #[test]
    fn instants_need_an_offset() {
        assert!(parse_instant("2026-12-01T09:00:00Z").is_ok());
        assert_eq!(
            parse_instant("2026-12-01T09:00:00-03:00").unwrap(),
            parse_instant("2026-12-01T12:00:00Z").unwrap()
        );
        assert!(parse_instant("2026-12-01T09:00:00").is_err());
        assert!(parse_instant("2026-12-01").is_err());
    }
}
