//! Times written the way Go's `time.Parse(time.RFC3339, s)` reads them and `metav1.Time`
//! writes them: the format of every time in a Kubernetes object (`creationTimestamp`,
//! `managedFields[].time`) and of a bootstrap token's `expiration`. The one parser of that
//! format in keyward.
//!
//! Go's parser is laxer than RFC 3339 and keyward accepts exactly what it accepts: a one-digit
//! hour, `,` before the fraction, any number of fraction digits (only nine count), offsets up to
//! `±24:60`. Its errors are Go's, word for word (`parsing time "x" as
//! "2006-01-02T15:04:05Z07:00": cannot parse "x" as "2006"`), since kube-apiserver returns them
//! to clients. `metav1.Time` keeps whole seconds in UTC: [`metav1_json`] gives the string
//! kube-apiserver would return for a time a client sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The layout of `time.RFC3339`, as Go's errors name it.
const LAYOUT: &str = "2006-01-02T15:04:05Z07:00";
/// Seconds from 0001-01-01T00:00:00Z (Go's zero `Time`) to the Unix epoch.
const ZERO_UNIX: i64 = -62_135_596_800;

/// A parsed time: seconds since the Unix epoch (negative before 1970) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoTime {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub unix: i64,
    /// Nanoseconds within the second (0 to 999,999,999).
    pub nanos: u32,
}

impl GoTime {
    /// Go's `Time.IsZero`: 0001-01-01T00:00:00Z exactly.
    pub fn is_zero(&self) -> bool {
        self.unix == ZERO_UNIX && self.nanos == 0
    }
}

/// Go's `time.Parse(time.RFC3339, value)`, step by step; the error is Go's message.
pub fn parse_rfc3339(value: &str) -> Result<GoTime, String> {
    let whole = value.as_bytes();
    let elem = |at: &[u8], layout_elem: &str| {
        format!(
            "parsing time {} as {}: cannot parse {} as {}",
            quote(whole),
            quote(LAYOUT.as_bytes()),
            quote(at),
            quote(layout_elem.as_bytes())
        )
    };
    let message = |what: &str| format!("parsing time {}{what}", quote(whole));
    let range = |what: &str| message(&format!(": {what} out of range"));

    // 2006
    let v = whole;
    if !(0..4).all(|i| digit(v, i)) {
        return Err(elem(v, "2006"));
    }
    let year = number(&v[..4]);
    let v = literal(&v[4..], b'-').map_err(|at| elem(at, "-"))?;
    // 01
    let (month, v) = getnum(v, true).ok_or_else(|| elem(v, "01"))?;
    if !(1..=12).contains(&month) {
        return Err(range("month"));
    }
    let v = literal(v, b'-').map_err(|at| elem(at, "-"))?;
    // 02 (checked against the month at the end, as Go does)
    let (day, v) = getnum(v, true).ok_or_else(|| elem(v, "02"))?;
    let v = literal(v, b'T').map_err(|at| elem(at, "T"))?;
    // 15: one digit is enough
    let (hour, v) = getnum(v, false).ok_or_else(|| elem(v, "15"))?;
    if hour >= 24 {
        return Err(range("hour"));
    }
    let v = literal(v, b':').map_err(|at| elem(at, ":"))?;
    // 04
    let (minute, v) = getnum(v, true).ok_or_else(|| elem(v, "04"))?;
    if minute >= 60 {
        return Err(range("minute"));
    }
    let v = literal(v, b':').map_err(|at| elem(at, ":"))?;
    // 05, and a fraction the layout does not name
    let (second, mut v) = getnum(v, true).ok_or_else(|| elem(v, "05"))?;
    if second >= 60 {
        return Err(range("second"));
    }
    let mut nanos = 0u32;
    if v.len() >= 2 && matches!(v[0], b'.' | b',') && digit(v, 1) {
        let n = 2 + v[2..].iter().take_while(|c| c.is_ascii_digit()).count();
        let counted = n.min(10);
        nanos = (number(&v[1..counted]) * 10i64.pow((10 - counted) as u32)) as u32;
        v = &v[n..];
    }
    // Z07:00
    let hold = v;
    let offset = if v.first() == Some(&b'Z') {
        v = &v[1..];
        0
    } else {
        if v.len() < 6 || v[3] != b':' {
            return Err(elem(hold, "Z07:00"));
        }
        // As Go: the minutes are read only if the hours were, and a later range error
        // replaces an earlier one (`> rather than >=`: offsets of 24 hours or 60 minutes pass).
        let hours = getnum(&v[1..3], true);
        let minutes = hours.and_then(|_| getnum(&v[4..6], true));
        let (hr, mm) = (hours.map_or(0, |h| h.0), minutes.map_or(0, |m| m.0));
        if mm > 60 {
            return Err(range("time zone offset minute"));
        }
        if hr > 24 {
            return Err(range("time zone offset hour"));
        }
        let magnitude = (hr * 60 + mm) * 60;
        let signed = match v[0] {
            b'+' => magnitude,
            b'-' => -magnitude,
            _ => return Err(elem(hold, "Z07:00")),
        };
        if hours.is_none() || minutes.is_none() {
            return Err(elem(hold, "Z07:00"));
        }
        v = &v[6..];
        signed
    };
    if !v.is_empty() {
        return Err(message(&format!(": extra text: {}", quote(v))));
    }
    if day < 1 || day > days_in(month, year) {
        return Err(message(": day out of range"));
    }
    let unix =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Ok(GoTime { unix, nanos })
}

/// [`parse_rfc3339`] as a `SystemTime`; `None` for what Go refuses (or a time `SystemTime`
/// cannot hold).
pub fn system_time(value: &str) -> Option<SystemTime> {
    let t = parse_rfc3339(value).ok()?;
    if t.unix >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(t.unix.unsigned_abs(), t.nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.unix.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(t.nanos)))
    }
}

/// Go's `t.UTC().Format(time.RFC3339)` for whole seconds since the epoch.
pub fn format_rfc3339_utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let year = if year < 0 {
        format!("-{:04}", year.unsigned_abs())
    } else {
        format!("{year:04}")
    };
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// What kube-apiserver returns for a `metav1.Time` a client sent as `value`: parsed as Go
/// parses it, then whole seconds in UTC; `None` for Go's zero time, which it leaves out.
pub fn metav1_json(value: &str) -> Result<Option<String>, String> {
    let t = parse_rfc3339(value)?;
    Ok((!t.is_zero()).then(|| format_rfc3339_utc(t.unix)))
}

/// Go's `quote` in package `time`: double quotes, `"` and `\` escaped, every byte outside
/// printable ASCII as `\xNN`.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7f => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

fn digit(v: &[u8], i: usize) -> bool {
    v.get(i).is_some_and(u8::is_ascii_digit)
}

/// The value of a run of ASCII digits (at most 18 of them).
fn number(digits: &[u8]) -> i64 {
    digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
}

/// Go's `getnum`: one or two digits (`fixed`: exactly two), and the rest.
fn getnum(v: &[u8], fixed: bool) -> Option<(i64, &[u8])> {
    if !digit(v, 0) {
        return None;
    }
    if !digit(v, 1) {
        return (!fixed).then(|| (number(&v[..1]), &v[1..]));
    }
    Some((number(&v[..2]), &v[2..]))
}

/// A one-byte literal of the layout (`-`, `T`, `:`) matched as Go's parser matches it: the rest
/// of the value after it, or the value where it did not match.
fn literal(v: &[u8], c: u8) -> Result<&[u8], &[u8]> {
    match v.split_first() {
        Some((&first, rest)) if first == c => Ok(rest),
        _ => Err(v),
    }
}

fn days_in(month: i64, year: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month, day) of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Result<(i64, u32), String> {
        parse_rfc3339(s).map(|t| (t.unix, t.nanos))
    }

    #[test]
    fn parses_what_go_parses() {
        assert_eq!(at("1970-01-01T00:00:00Z"), Ok((0, 0)));
        assert_eq!(at("2009-11-10T23:00:00Z"), Ok((1_257_894_000, 0)));
        assert_eq!(at("2009-11-11T00:30:00+01:30"), Ok((1_257_894_000, 0)));
        assert_eq!(at("2009-11-10T22:00:00-01:00"), Ok((1_257_894_000, 0)));
        assert_eq!(
            at("2009-11-10T23:00:00.5Z"),
            Ok((1_257_894_000, 500_000_000))
        );
        assert_eq!(
            at("2009-11-10T23:00:00,25Z"),
            Ok((1_257_894_000, 250_000_000))
        );
        // Digits past the ninth are read and dropped.
        assert_eq!(
            at("2009-11-10T23:00:00.1234567891Z"),
            Ok((1_257_894_000, 123_456_789))
        );
        assert_eq!(at("2000-02-29T00:00:00Z"), Ok((951_782_400, 0)));
        assert_eq!(at("1969-12-31T23:59:59Z"), Ok((-1, 0)));
        assert_eq!(at("0001-01-01T00:00:00Z"), Ok((ZERO_UNIX, 0)));
        // Go's laxness: a one-digit hour, offsets of 24 hours or 60 minutes.
        assert_eq!(at("2009-11-10T3:00:00Z"), Ok((1_257_822_000, 0)));
        assert_eq!(at("2009-11-10T23:00:00+24:00"), Ok((1_257_807_600, 0)));
        assert_eq!(at("2009-11-10T23:00:00-00:60"), Ok((1_257_897_600, 0)));
        // What the Python client sends for a time it read.
        assert_eq!(at("2026-12-02T01:22:57+00:00"), Ok((1_796_174_577, 0)));
    }

    #[test]
    fn refuses_with_gos_messages() {
        let cases = [
            ("", r#"parsing time "" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "2006""#),
            ("x", r#"parsing time "x" as "2006-01-02T15:04:05Z07:00": cannot parse "x" as "2006""#),
            ("20a9-11-10T23:00:00Z", r#"parsing time "20a9-11-10T23:00:00Z" as "2006-01-02T15:04:05Z07:00": cannot parse "20a9-11-10T23:00:00Z" as "2006""#),
            ("2009-11-10", r#"parsing time "2009-11-10" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "T""#),
            ("2009-11-10 23:00:00Z", r#"parsing time "2009-11-10 23:00:00Z" as "2006-01-02T15:04:05Z07:00": cannot parse " 23:00:00Z" as "T""#),
            ("2009-11-10t23:00:00Z", r#"parsing time "2009-11-10t23:00:00Z" as "2006-01-02T15:04:05Z07:00": cannot parse "t23:00:00Z" as "T""#),
            ("2009-1-10T23:00:00Z", r#"parsing time "2009-1-10T23:00:00Z" as "2006-01-02T15:04:05Z07:00": cannot parse "1-10T23:00:00Z" as "01""#),
            ("2009-11-10T23:00:00", r#"parsing time "2009-11-10T23:00:00" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "Z07:00""#),
            ("2009-11-10T23:00:00z", r#"parsing time "2009-11-10T23:00:00z" as "2006-01-02T15:04:05Z07:00": cannot parse "z" as "Z07:00""#),
            ("2009-11-10T23:00:00.Z", r#"parsing time "2009-11-10T23:00:00.Z" as "2006-01-02T15:04:05Z07:00": cannot parse ".Z" as "Z07:00""#),
            ("2009-11-10T23:00:00+0100", r#"parsing time "2009-11-10T23:00:00+0100" as "2006-01-02T15:04:05Z07:00": cannot parse "+0100" as "Z07:00""#),
            ("2009-11-10T23:00:00*01:00", r#"parsing time "2009-11-10T23:00:00*01:00" as "2006-01-02T15:04:05Z07:00": cannot parse "*01:00" as "Z07:00""#),
            ("2009-11-10T24:00:00Z", r#"parsing time "2009-11-10T24:00:00Z": hour out of range"#),
            ("2009-11-10T23:60:00Z", r#"parsing time "2009-11-10T23:60:00Z": minute out of range"#),
            ("2009-11-10T23:00:60Z", r#"parsing time "2009-11-10T23:00:60Z": second out of range"#),
            ("2009-13-01T00:00:00Z", r#"parsing time "2009-13-01T00:00:00Z": month out of range"#),
            ("2009-02-29T00:00:00Z", r#"parsing time "2009-02-29T00:00:00Z": day out of range"#),
            ("2100-02-29T00:00:00Z", r#"parsing time "2100-02-29T00:00:00Z": day out of range"#),
            ("2009-11-10T23:00:00+25:00", r#"parsing time "2009-11-10T23:00:00+25:00": time zone offset hour out of range"#),
            ("2009-11-10T23:00:00Z ", r#"parsing time "2009-11-10T23:00:00Z ": extra text: " ""#),
            ("09-11-10T23:00:00Z", r#"parsing time "09-11-10T23:00:00Z" as "2006-01-02T15:04:05Z07:00": cannot parse "09-11-10T23:00:00Z" as "2006""#),
            ("2009-11-10T23:00:00Zé\"", "parsing time \"2009-11-10T23:00:00Z\\xc3\\xa9\\\"\": extra text: \"\\xc3\\xa9\\\"\""),
        ];
        for (input, want) in cases {
            assert_eq!(parse_rfc3339(input), Err(want.to_owned()), "{input:?}");
        }
    }

    #[test]
    fn metav1_time_is_whole_seconds_in_utc() {
        let json = |s: &str| metav1_json(s).map_err(|_| ());
        assert_eq!(
            json("2026-12-02T01:22:57+00:00"),
            Ok(Some("2026-12-02T01:22:57Z".into()))
        );
        assert_eq!(
            json("2026-12-02T03:22:57.999+02:00"),
            Ok(Some("2026-12-02T01:22:57Z".into()))
        );
        assert_eq!(
            json("1969-12-31T23:59:59Z"),
            Ok(Some("1969-12-31T23:59:59Z".into()))
        );
        assert_eq!(json("0001-01-01T00:00:00Z"), Ok(None));
        assert_eq!(
            json("0001-01-01T00:00:00.5Z"),
            Ok(Some("0001-01-01T00:00:00Z".into()))
        );
        assert_eq!(
            json("0000-01-01T00:00:00+01:00"),
            Ok(Some("-0001-12-31T23:00:00Z".into()))
        );
        assert_eq!(
            json("9999-12-31T23:00:00-01:00"),
            Ok(Some("10000-01-01T00:00:00Z".into()))
        );
        assert_eq!(json("soon"), Err(()));
    }

    #[test]
    fn system_times_are_what_go_parses() {
        let at = |s: &str| {
            system_time(s).map(|t| match t.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            })
        };
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(at("2009-11-10T23:00:00Z"), Some(1_257_894_000.0));
        assert_eq!(at("2009-11-11T00:30:00+01:30"), Some(1_257_894_000.0));
        assert_eq!(at("2009-11-10T22:00:00-01:00"), Some(1_257_894_000.0));
        assert_eq!(at("2009-11-10T23:00:00.5Z"), Some(1_257_894_000.5));
        assert_eq!(at("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        assert_eq!(at("1969-12-31T23:59:59Z"), Some(-1.0));
        // Go's laxness, kept: a one-digit hour, an offset of 24 hours.
        assert_eq!(at("2009-11-10T3:00:00Z"), Some(1_257_822_000.0));
        assert_eq!(at("2009-11-11T23:00:00+24:00"), Some(1_257_894_000.0));
        for bad in [
            "",
            "2009-11-10",
            "2009-11-10 23:00:00Z",
            "2009-11-10t23:00:00Z",
            "2009-11-10T23:00:00z",
            "2009-11-10T23:00:00",
            "2009-11-10T24:00:00Z",
            "2009-11-10T23:60:00Z",
            "2009-11-10T23:00:60Z",
            "2009-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2009-13-01T00:00:00Z",
            "2009-11-10T23:00:00Z ",
            "2009-11-10T23:00:00.Z",
            "2009-11-10T23:00:00+0100",
            "2009-11-10T23:00:00+25:00",
            "09-11-10T23:00:00Z",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }
    #[test]
    fn dates_round_trip_through_days() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }
}
