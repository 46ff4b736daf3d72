//! Durations written the way Go's `time.ParseDuration` reads them (`3s`, `500ms`, `1m30s`,
//! `1.5h`): the format of Kubernetes configuration files (an `EncryptionConfiguration`'s KMS
//! `timeout`) and of flags that mirror them. The one parser of that format in keyward.

use std::time::Duration;

/// Nanoseconds in a Go duration's range: `|d| <= 2^63` ns (about 292 years).
const LIMIT: u64 = 1 << 63;

/// Go's `time.ParseDuration`: an optional sign, then `0`, or one or more decimal numbers (with
/// an optional fraction) each followed by a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`),
/// such as `300ms`, `-1.5h` or `2h45m`. `None` for anything else and for durations beyond Go's
/// range. A negative duration comes back as zero (a `Duration` cannot be negative): callers
/// that require a positive value refuse zero; [`parse_unsigned`] refuses any sign.
pub fn parse(s: &str) -> Option<Duration> {
    let (negative, nanos) = parse_signed(s)?;
    Some(if negative {
        Duration::ZERO
    } else {
        Duration::from_nanos(nanos)
    })
}

/// [`parse`] without a sign: `+` or `-` in front is refused, as for a flag that takes a
/// timeout.
pub fn parse_unsigned(s: &str) -> Option<Duration> {
    if s.starts_with(['+', '-']) {
        return None;
    }
    parse(s)
}

/// Whether the duration is negative, and its magnitude in nanoseconds. Follows Go's
/// `time.ParseDuration` step by step, including its float arithmetic for fractions.
fn parse_signed(s: &str) -> Option<(bool, u64)> {
    let (negative, mut s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if s == "0" {
        return Some((negative, 0));
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return None;
        }
        let (int, rest) = s.split_at(digits(s));
        let whole = leading_int(int)?;
        s = rest;
        let (mut fraction, mut scale, mut has_fraction) = (0, 1.0, false);
        if let Some(rest) = s.strip_prefix('.') {
            let (frac, rest) = rest.split_at(digits(rest));
            (fraction, scale) = leading_fraction(frac);
            has_fraction = !frac.is_empty();
            s = rest;
        }
        if int.is_empty() && !has_fraction {
            return None;
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit: u64 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        if whole > LIMIT / unit {
            return None;
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // As Go does: float64 is exact to the nanosecond for fractions of an hour.
            value = value.checked_add((fraction as f64 * (unit as f64 / scale)) as u64)?;
            if value > LIMIT {
                return None;
            }
        }
        total = total.checked_add(value)?;
        if total > LIMIT {
            return None;
        }
    }
    if !negative && total > LIMIT - 1 {
        return None;
    }
    Some((negative, total))
}

/// Length of the run of ASCII digits `s` starts with.
fn digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Go's `leadingInt` over a run of digits: `None` beyond 2^63.
fn leading_int(digits: &str) -> Option<u64> {
    let mut x: u64 = 0;
    for d in digits.bytes() {
        x = x.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        if x > LIMIT {
            return None;
        }
    }
    Some(x)
}

/// Go's `leadingFraction` over a run of digits: the digits as an integer and 10^(digits
/// used); digits past what fits are ignored.
fn leading_fraction(digits: &str) -> (u64, f64) {
    let (mut x, mut scale) = (0u64, 1.0f64);
    for d in digits.bytes() {
        if x > (LIMIT - 1) / 10 {
            break;
        }
        let y = x * 10 + u64::from(d - b'0');
        if y > LIMIT {
            break;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (s, want) in [
            ("3s", ms(3000)),
            ("500ms", ms(500)),
            ("1m30s", ms(90_000)),
            ("1.5s", ms(1500)),
            ("1.5m", ms(90_000)),
            ("2h", ms(7_200_000)),
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1h1m1s1ms", ms(3_661_001)),
            ("1h2m3.25s", ms(3_723_250)),
            ("+3s", ms(3000)),
            ("-3s", Duration::ZERO),
            ("-0", Duration::ZERO),
            (".5s", ms(500)),
            ("5.s", ms(5000)),
            ("1500us", Duration::from_micros(1500)),
            ("10µs", Duration::from_micros(10)),
            ("10μs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1.000000001s", Duration::new(1, 1)),
            ("0.3333333333333h", Duration::from_nanos(1_199_999_999_999)),
            (
                "9223372036854775807ns",
                Duration::from_nanos(i64::MAX as u64),
            ),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
            ("-9223372036854775808ns", Duration::ZERO),
        ] {
            assert_eq!(parse(s), Some(want), "{s}");
        }
        for bad in [
            "",
            "3",
            "s",
            "3x",
            "1..5s",
            "1.5.s",
            "3 s",
            "-",
            "+",
            "3S",
            ".s",
            "1e3s",
            "soon",
            "9223372036854775808ns",
            "2562048h",
            "-9223372036854775809ns",
            "99999999999999999999s",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn unsigned_refuses_a_sign() {
        assert_eq!(parse_unsigned("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_unsigned("0"), Some(Duration::ZERO));
        for bad in ["-1s", "+1s", "-0", ""] {
            assert_eq!(parse_unsigned(bad), None, "{bad}");
        }
    }
}
