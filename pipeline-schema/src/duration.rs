//! Durations as GitLab and Go write them: `30s`, `10m`, `1h30m`, `1.5h`,
//! `500ms`; a sequence of decimal numbers each with a unit (`ns`, `us`,
//! `µs`, `ms`, `s`, `m`, `h`, and `d` for 24 hours), spaces allowed between
//! the parts (`1h 30m`). A bare number is refused: `timeout: 600` is ambiguous.

use std::fmt::Write as _;
use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("expected a number at `{0}`")]
    Number(String),
    #[error("missing unit after `{0}` (one of ns, us, ms, s, m, h, d)")]
    MissingUnit(String),
    #[error("unknown unit `{0}` (one of ns, us, ms, s, m, h, d)")]
    Unit(String),
    #[error("too large")]
    Overflow,
}

/// Parses a duration such as `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(DurationError::Number(rest.to_string()));
        }
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "" => return Err(DurationError::MissingUnit(number.to_string())),
            other => return Err(DurationError::Unit(other.to_string())),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| DurationError::Overflow)?
        };
        let mut nanos = whole
            .checked_mul(nanos_per_unit)
            .ok_or(DurationError::Overflow)?;
        // The fraction, digit by digit, exact to the nanosecond.
        let mut scale = nanos_per_unit;
        for digit in fraction.bytes().take(18) {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(nanos).ok_or(DurationError::Overflow)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way [`parse_duration`] reads it back: `1h30m`,
/// `45s`, `1.5s`, `250ms`, `0s`.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 && nanos == 0 {
        return "0s".to_string();
    }
    if secs == 0 {
        return if nanos % 1_000_000 == 0 {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos % 1_000 == 0 {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let mut out = String::new();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        let _ = write!(out, "{s}.{}s", fraction.trim_end_matches('0'));
    } else if s > 0 {
        let _ = write!(out, "{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_and_gitlab_forms() {
        let cases = [
            ("10m", 600.0),
            ("1h30m", 5400.0),
            ("1h 30m", 5400.0),
            ("1.5h", 5400.0),
            ("90s", 90.0),
            ("500ms", 0.5),
            ("2d", 172_800.0),
            ("1m0.25s", 60.25),
            (".5s", 0.5),
        ];
        for (text, secs) in cases {
            let d = parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!((d.as_secs_f64() - secs).abs() < 1e-9, "{text}: {d:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("600"),
            Err(DurationError::MissingUnit("600".into()))
        );
        assert_eq!(
            parse_duration("10 minutes"),
            Err(DurationError::Unit("minutes".into()))
        );
        assert_eq!(parse_duration("h"), Err(DurationError::Number("h".into())));
        assert_eq!(
            parse_duration("1..2s"),
            Err(DurationError::Number("1..2s".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999h"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn formats_round_trip() {
        for text in ["1h30m", "45s", "1.5s", "250ms", "0s", "2h", "1m5s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
