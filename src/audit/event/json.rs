//! An [`Event`]'s JSON line written by hand: the bytes serde_json writes for the event's
//! `Serialize` implementation (same field order, same omitted fields, same escaping), without
//! serde's generic machinery and straight into the caller's buffer. The tests compare the two
//! over random strings and every optional field.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::{Event, ObjectReference, ResponseStatus, UserInfo};

/// Appends `ev` as one line of JSON (no newline) to `out`, leaving out the annotations whose
/// keys are in `omit`. Returns whether an `annotations` object was written (it is then the last
/// member, so the line ends with `}}`).
pub(in crate::audit) fn write_event(ev: &Event, out: &mut Vec<u8>, omit: &[&str]) -> bool {
    let c = &*ev.common;
    out.extend_from_slice(b"{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"");
    out.extend_from_slice(c.level.as_str().as_bytes());
    out.extend_from_slice(b"\",\"auditID\":");
    string(out, &c.audit_id);
    out.extend_from_slice(b",\"stage\":\"");
    out.extend_from_slice(ev.stage.as_str().as_bytes());
    out.extend_from_slice(b"\",\"requestURI\":");
    string(out, &c.request_uri);
    out.extend_from_slice(b",\"verb\":");
    string(out, &c.verb);
    out.extend_from_slice(b",\"user\":");
    match &c.user_json {
        Some(json) => out.extend_from_slice(json),
        None => user_info(out, &c.user),
    }
    if let Some(u) = ev.impersonated_user_written() {
        out.extend_from_slice(b",\"impersonatedUser\":");
        user_info(out, u);
    }
    if !c.source_ips.is_empty() {
        out.extend_from_slice(b",\"sourceIPs\":");
        strings(out, &c.source_ips);
    }
    if !c.user_agent.is_empty() {
        out.extend_from_slice(b",\"userAgent\":");
        string(out, &c.user_agent);
    }
    if let Some(r) = &ev.object_ref {
        out.extend_from_slice(b",\"objectRef\":");
        object_ref(out, r);
    }
    if let Some(s) = &ev.response_status {
        out.extend_from_slice(b",\"responseStatus\":");
        response_status(out, s);
    }
    for (name, obj) in [
        (&b",\"requestObject\":"[..], &ev.request_object),
        (&b",\"responseObject\":"[..], &ev.response_object),
    ] {
        if let Some(obj) = obj {
            out.extend_from_slice(name);
            // serde_json's compact output of a nested value is what it writes inside the event.
            serde_json::to_writer(&mut *out, obj).expect("an audit object always serialises");
        }
    }
    out.extend_from_slice(b",\"requestReceivedTimestamp\":");
    time(out, &c.request_received_timestamp);
    out.extend_from_slice(b",\"stageTimestamp\":");
    time(out, &ev.stage_timestamp);
    let mut first = true;
    for (k, v) in ev.annotations.iter() {
        if omit.contains(&k.as_ref()) {
            continue;
        }
        out.extend_from_slice(if first { b",\"annotations\":{" } else { b"," });
        first = false;
        string(out, k);
        out.push(b':');
        long_string(out, v);
    }
    if !first {
        out.push(b'}');
    }
    out.push(b'}');
    !first
}

thread_local! {
    /// The last long string this thread escaped, and its JSON.
    static LAST_LONG: RefCell<(String, Vec<u8>)> = const { RefCell::new((String::new(), Vec::new())) };
}

/// Strings this long (up to [`LONGEST_KEPT`]) are looked up in [`LAST_LONG`] (an authorization
/// reason, which the next request of the same caller repeats) before they are escaped.
const LONG: usize = 48;
const LONGEST_KEPT: usize = 4096;

/// [`string`], copied from the last long string this thread escaped when it is the same.
fn long_string(out: &mut Vec<u8>, s: &str) {
    if !(LONG..=LONGEST_KEPT).contains(&s.len()) {
        return string(out, s);
    }
    LAST_LONG.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return string(out, s);
        };
        let (text, json) = &mut *last;
        if text == s {
            return out.extend_from_slice(json);
        }
        let start = out.len();
        string(out, s);
        text.clear();
        text.push_str(s);
        json.clear();
        json.extend_from_slice(&out[start..]);
    })
}

fn time(out: &mut Vec<u8>, t: &super::MicroTime) {
    match t.text() {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(&text);
            out.push(b'"');
        }
        None => string(out, &t.to_string()),
    }
}

/// `u` as a JSON object.
pub(super) fn user_info(out: &mut Vec<u8>, u: &UserInfo) {
    let mut sep = Separator::new(out);
    if !u.username.is_empty() {
        sep.key(b"\"username\":");
        string(sep.out, &u.username);
    }
    if !u.uid.is_empty() {
        sep.key(b"\"uid\":");
        string(sep.out, &u.uid);
    }
    if !u.groups.is_empty() {
        sep.key(b"\"groups\":");
        strings(sep.out, &u.groups);
    }
    if !u.extra.is_empty() {
        sep.key(b"\"extra\":");
        extra(sep.out, &u.extra);
    }
    sep.close();
}

fn extra(out: &mut Vec<u8>, extra: &BTreeMap<String, Vec<String>>) {
    out.push(b'{');
    for (i, (k, v)) in extra.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        strings(out, v);
    }
    out.push(b'}');
}

fn object_ref(out: &mut Vec<u8>, r: &ObjectReference) {
    let mut sep = Separator::new(out);
    for (key, value) in [
        (&b"\"resource\":"[..], &r.resource),
        (b"\"namespace\":", &r.namespace),
        (b"\"name\":", &r.name),
        (b"\"uid\":", &r.uid),
        (b"\"apiGroup\":", &r.api_group),
        (b"\"apiVersion\":", &r.api_version),
        (b"\"resourceVersion\":", &r.resource_version),
        (b"\"subresource\":", &r.subresource),
    ] {
        if !value.is_empty() {
            sep.key(key);
            string(sep.out, value);
        }
    }
    sep.close();
}

fn response_status(out: &mut Vec<u8>, s: &ResponseStatus) {
    out.extend_from_slice(b"{\"metadata\":{}");
    if !s.status.is_empty() {
        out.extend_from_slice(b",\"status\":");
        string(out, s.status);
    }
    if !s.message.is_empty() {
        out.extend_from_slice(b",\"message\":");
        string(out, &s.message);
    }
    if !s.reason.is_empty() {
        out.extend_from_slice(b",\"reason\":");
        string(out, s.reason);
    }
    if let Some(d) = &s.details {
        out.extend_from_slice(b",\"details\":");
        out.extend_from_slice(d.get().as_bytes());
    }
    out.extend_from_slice(b",\"code\":");
    decimal(out, u64::from(s.code));
    out.push(b'}');
}

/// Appends `n` in decimal, without `fmt`.
pub(in crate::audit) fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes an object's members with commas between them.
struct Separator<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Separator<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &[u8]) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(key);
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn strings(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s);
    }
    out.push(b']');
}

/// What each byte is escaped with: 0 for none, `u` for `\u00XX`, else the letter after the
/// backslash.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Whether any of the eight bytes in `w` needs escaping: a control character, `"` or `\`.
/// Exact (the classic "has a zero byte" and "has a byte less than n" tests).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    (below_space | zero(quote) | zero(backslash)) & HIGH != 0
}

/// `s` as a JSON string, escaped as serde_json escapes it: `"` and `\` with a backslash,
/// `\b \f \n \r \t` by name, other control characters as `\u00XX` (lowercase hex), everything
/// else (DEL and non-ASCII included) as it is. Runs of eight bytes that need nothing are
/// copied without looking at each byte.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            if !needs_escape(word) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape = ESCAPE[usize::from(b)];
        i += 1;
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i - 1]);
        start = i;
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests;
