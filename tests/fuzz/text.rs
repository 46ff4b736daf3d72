//! Small text parsers: label selectors, Go durations, names (namespaces, Secret names, data
//! keys, FQDNs), `resourceVersion`, `unix://` endpoints and bearer headers.

use std::collections::BTreeMap;
use std::time::Duration;

use keyward::go_duration;
use keyward::names::{
    is_dns1123_label, is_dns1123_subdomain, is_fqdn, DataKey, Namespace, SecretName,
};
use keyward::store::{ResourceVersion, Selector};

use crate::harness::{fuzz, regressions, Corpus};

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

#[test]
fn label_selectors() {
    let corpus = Corpus::text(
        &[
            "app=web",
            "app==web,tier!=db",
            "env in (prod, staging),!canary",
            "tier notin (a,b),team",
            "example.com/app=x-1.y_2",
            "",
        ],
        &[
            "app",
            "=",
            "==",
            "!=",
            " in ",
            " notin ",
            "(",
            ")",
            ",",
            "!",
            "example.com/",
            "a.b",
            "-",
            "_",
            ".",
            " ",
            "x",
            "web",
        ],
    );
    let mut labels = BTreeMap::new();
    labels.insert("app".to_owned(), "web".to_owned());
    labels.insert("env".to_owned(), "prod".to_owned());
    fuzz("label selector", 3000, &corpus, |input| {
        let s = text(input);
        match Selector::parse(&s) {
            Ok(sel) => {
                let _ = sel.matches(&labels);
                let _ = sel.matches(&BTreeMap::new());
                // Parsing is a function of the text.
                assert_eq!(
                    Selector::parse(&s).map(|again| again.matches(&labels)),
                    Ok(sel.matches(&labels))
                );
            }
            Err(e) => assert!(!e.is_empty(), "an empty error for {s:?}"),
        }
    });
}

/// Go's duration text for `nanos`, written the way a person might (largest units first).
fn go_text(nanos: u64) -> String {
    let (h, rest) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let (s, rest) = (rest / 1_000_000_000, rest % 1_000_000_000);
    let (ms, rest) = (rest / 1_000_000, rest % 1_000_000);
    let (us, ns) = (rest / 1_000, rest % 1_000);
    let mut out = String::new();
    for (v, unit) in [
        (h, "h"),
        (m, "m"),
        (s, "s"),
        (ms, "ms"),
        (us, "us"),
        (ns, "ns"),
    ] {
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    if out.is_empty() {
        out.push('0');
    }
    out
}

#[test]
fn go_durations() {
    let corpus = Corpus::text(
        &[
            "3s",
            "500ms",
            "1m30s",
            "1.5h",
            "-2h45m",
            "+0",
            "0",
            "1µs",
            "1μs",
            "2562047h47m16.854775807s",
        ],
        &[
            "0",
            "1",
            "9",
            ".",
            "5",
            "ns",
            "us",
            "µs",
            "μs",
            "ms",
            "s",
            "m",
            "h",
            "-",
            "+",
            "99999999999999999999",
        ],
    );
    fuzz("go duration", 5000, &corpus, |input| {
        let s = text(input);
        if let Some(d) = go_duration::parse(&s) {
            assert!(d.as_nanos() <= 1u128 << 63, "{s:?} beyond Go's range");
        }
        let unsigned = go_duration::parse_unsigned(&s);
        if s.starts_with(['+', '-']) {
            assert_eq!(unsigned, None);
        }
        // Round trip: every duration in range reads back from its own text.
        let nanos =
            input.iter().take(8).fold(0u64, |n, &b| (n << 8) | b as u64) & ((1u64 << 63) - 1);
        assert_eq!(
            go_duration::parse(&go_text(nanos)),
            Some(Duration::from_nanos(nanos)),
            "{}",
            go_text(nanos)
        );
    });
}

#[test]
fn names_and_keys() {
    let corpus = Corpus::text(
        &[
            "default",
            "kube-system",
            "my.secret-1",
            "tls.crt",
            ".dockerconfigjson",
            "a",
            "example.com",
        ],
        &[
            "a", "z", "0", "-", ".", "_", "A", "..", "/", " ", "\u{e9}", "example", "com",
        ],
    );
    fuzz("names", 5000, &corpus, |input| {
        let s = text(input);
        match Namespace::try_from(s.as_str()) {
            Ok(ns) => {
                assert!(is_dns1123_label(&s));
                assert_eq!(ns.as_str(), s);
            }
            Err(e) => assert_eq!(e.field, Namespace::FIELD),
        }
        match SecretName::try_from(s.as_str()) {
            Ok(n) => {
                assert!(is_dns1123_subdomain(&s));
                assert_eq!(n.to_string(), s);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        if let Ok(k) = DataKey::parse("data", &s) {
            assert_eq!(k.as_str(), s);
            assert!(!s.is_empty() && s.len() <= 253, "{s:?}");
        }
        if is_fqdn(&s) {
            assert!(!s.contains('/'), "{s:?}");
        }
    });
}

#[test]
fn resource_versions() {
    let corpus = Corpus::text(
        &["", "0", "1", "42", "9223372036854775807"],
        &["0", "1", "9", "-", "+", " ", "9223372036854775808", "e"],
    );
    fuzz("resourceVersion", 3000, &corpus, |input| {
        let s = text(input);
        match ResourceVersion::parse(ResourceVersion::FIELD, &s) {
            Ok(rv) => {
                if let Some(r) = rv.revision() {
                    assert_eq!(r.to_string(), s.trim_start_matches('0'), "{s:?}");
                }
            }
            Err(e) => assert_eq!(e.field, ResourceVersion::FIELD),
        }
    });
}

#[test]
fn unix_endpoints_and_bearer_headers() {
    let corpus = Corpus::text(
        &[
            "unix:///run/kms.sock",
            "unix:///tmp/a b",
            "@abstract",
            "Bearer abc.def",
            "bearer  x",
        ],
        &[
            "unix://", "/", "@", "%", "Bearer ", "bearer", " ", "\t", "tcp://", "..", "\0",
        ],
    );
    fuzz(
        "unix endpoints and bearer headers",
        3000,
        &corpus,
        |input| {
            let s = text(input);
            let _ = keyward::uds::parse_unix_endpoint(&s);
            let _ = keyward::authn::parse_bearer(&s);
            let _ = keyward::authn::bootstrap::parse_token(&s);
            let _ = keyward::go_time::system_time(&s);
            let _ = keyward::go_time::metav1_json(&s);
        },
    );
}

#[test]
fn regression_inputs() {
    // Found by the bad-input catalogue: a label value with a key's `prefix/` was accepted.
    for bad in ["a in (b/c)", "a=b/c", "a!=x/y"] {
        assert!(Selector::parse(bad).is_err(), "{bad}");
    }
    regressions(
        "text regressions",
        &[b"", b"\xff", b"!(", b"a in (", b"-0", b"1.h"],
        |input| {
            let s = text(input);
            let _ = Selector::parse(&s);
            let _ = go_duration::parse(&s);
        },
    );
}
