//! How the commands lay out what they print: columns and label lists, times and durations, hex
//! dumps. Each layout is written once here; the commands choose what goes in it.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// Rows in columns as kubectl prints them: each column as wide as its widest cell and at
/// least three (kubectl's tabwriter: 6 with the gap), three spaces apart; one line per row,
/// ending in a newline.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    columns(rows, 3, &vec![3; cols])
}

/// A table printed a block of rows at a time, as kubectl prints `get -w`: each column as wide
/// as its widest cell so far (a new row may widen it for itself and the rows after, never for
/// the rows already printed) and at least three, three spaces apart; the header is printed
/// with the first rows.
#[derive(Debug, Default)]
pub(super) struct GrowingTable {
    widths: Vec<usize>,
    header: Option<Vec<String>>,
}

impl GrowingTable {
    /// A table whose first block starts with `header`.
    pub(super) fn new(header: Vec<String>) -> Self {
        GrowingTable {
            widths: header.iter().map(|h| width(h)).collect(),
            header: Some(header),
        }
    }

    /// A table without a header row (kubectl's `--no-headers`).
    pub(super) fn headless() -> Self {
        GrowingTable::default()
    }

    /// The lines of `rows` (after the header, the first time).
    pub(super) fn block(&mut self, rows: Vec<Vec<String>>) -> String {
        let rows: Vec<Vec<String>> = self.header.take().into_iter().chain(rows).collect();
        for r in &rows {
            for (c, cell) in r.iter().enumerate() {
                match self.widths.get_mut(c) {
                    Some(w) => *w = (*w).max(width(cell)),
                    None => self.widths.push(width(cell)),
                }
            }
        }
        // kubectl's tabwriter makes a column at least 6 wide, gap included, and pads every
        // cell but the last, so a row whose last cells are empty ends in blanks.
        let widths: Vec<usize> = self.widths.iter().map(|w| (*w).max(3)).collect();
        lay_out(&rows, 3, &widths, false)
    }
}

/// Rows in columns `gap` spaces apart, column `i` at least `min_widths[i]` wide (the widest
/// cell otherwise); the last column is not padded, lines carry no trailing blanks and each ends
/// in a newline.
pub(super) fn columns(rows: &[Vec<String>], gap: usize, min_widths: &[usize]) -> String {
    lay_out(rows, gap, min_widths, true)
}

/// [`columns`], with the blanks at the ends of lines kept unless `trim`.
fn lay_out(rows: &[Vec<String>], gap: usize, min_widths: &[usize], trim: bool) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            let widest = rows.iter().map(|r| width(&r[c])).max().unwrap_or(0);
            widest.max(min_widths.get(c).copied().unwrap_or(0))
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                // Padded by hand: `{:<w$}` panics for widths past u16::MAX (a cell may be as
                // long as a stored field: a `type` of 70,000 characters).
                line.push_str(cell);
                let pad = widths[c].saturating_sub(width(cell)) + gap;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(if trim { line.trim_end() } else { &line });
        out.push('\n');
    }
    out
}

/// A cell's width as kubectl's tabwriter counts it: in characters (padding with `{:<w$}`
/// counts them too).
fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// `label: value` lines, the values aligned two spaces after the longest label; no newline
/// after the last.
pub(super) fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len() + 1).max().unwrap_or(0) + 2;
    rows.iter()
        .map(|(label, value)| format!("{:<width$}{value}", format!("{label}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Seconds since the epoch as RFC 3339 in UTC, e.g. `2024-05-01T12:00:00Z`.
pub(super) fn format_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// kubectl's AGE column, as kube-apiserver's Table writes it (`duration.HumanDuration`): `45s`,
/// `6m56s`, `12m`, `5h30m`, `3d4h`, `2y`.
pub(super) fn age(created: &str, now: SystemTime) -> String {
    let Some(t) = crate::go_time::system_time(created) else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(t).unwrap_or(Duration::ZERO).as_secs();
    crate::kube::table::human_duration(secs)
}

/// `90d`, `12h`, `5m` or `30s`: the largest unit that divides `secs` exactly.
pub(super) fn short_duration(secs: u64) -> String {
    match secs {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `bytes` as `hexdump -C` shows them: offset, 16 bytes in hex, the printable ones as text.
pub(super) fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hexes: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{:08x}  {:<47}  |{text}|", i * 16, hexes.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[&[&str]]) -> Vec<Vec<String>> {
        r.iter()
            .map(|r| r.iter().map(|c| (*c).to_owned()).collect())
            .collect()
    }

    #[test]
    fn tables_align_columns_and_trim_lines() {
        let t = table(&rows(&[&["NAME", "TYPE", "DATA"], &["db", "Opaque", ""]]));
        assert_eq!(t, "NAME   TYPE     DATA\ndb     Opaque\n");
        let t = columns(
            &rows(&[&["KEY_ID", "STATE", "N"], &["kw-1", "primary", "3"]]),
            2,
            &[0, 12],
        );
        assert_eq!(t, "KEY_ID  STATE         N\nkw-1    primary       3\n");
        assert_eq!(table(&[]), "");
        // A cell wider than any format width (a stored `type` of 70,000 characters).
        let wide = "t".repeat(70_000);
        let t = table(&rows(&[&["NAME", "TYPE", "DATA"], &["db", &wide, "1"]]));
        assert!(t.ends_with(&format!("db     {wide}   1\n")), "{}", &t[..20]);
    }

    #[test]
    fn fields_align_values() {
        let f = fields(&[("keys", "2".into()), ("primary key_id", "kw-1".into())]);
        assert_eq!(f, "keys:            2\nprimary key_id:  kw-1");
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(-5), "1970-01-01T00:00:00Z");
        let now = humantime::parse_rfc3339("2024-01-03T00:00:00Z").unwrap();
        assert_eq!(age("2024-01-02T23:59:15Z", now), "45s");
        assert_eq!(age("2024-01-01T00:00:00Z", now), "2d");
        assert_eq!(age("2024-01-02T23:53:04Z", now), "6m56s");
        assert_eq!(age("2024-01-02T19:30:00Z", now), "4h30m");
        assert_eq!(age("yesterday", now), "<unknown>");
        for (secs, want) in [(90 * 86400, "90d"), (7200, "2h"), (300, "5m"), (61, "61s")] {
            assert_eq!(short_duration(secs), want);
        }
    }

    #[test]
    fn hex_dumps_like_hexdump_c() {
        let d = hex_dump(b"k8s:enc:aescbc:v1:key1:\x00\xff");
        assert_eq!(
            d,
            "00000000  6b 38 73 3a 65 6e 63 3a 61 65 73 63 62 63 3a 76  |k8s:enc:aescbc:v|\n\
             00000010  31 3a 6b 65 79 31 3a 00 ff                       |1:key1:..|\n"
        );
        assert_eq!(hex_dump(b""), "");
    }
}
