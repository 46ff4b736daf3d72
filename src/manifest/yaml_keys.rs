//! Repeated mapping keys of a YAML body, as kube-apiserver's strict decode of a server-side
//! apply reports them (`yaml.UnmarshalStrict`, go-yaml v2): `line N: key "k" already set in
//! map` for each key that repeats one before it in the same mapping, `N` being the line where
//! the repeated key's value starts, in the order go-yaml meets them (a value's own repeats
//! before its key's). Its non-strict decode keeps the last value, as the JSON value
//! [`yaml_value`](crate::kube::request::yaml_value) reads does.
//!
//! serde gives no positions, but a deserialization error carries the position of the event it
//! was raised at: a first walk numbers every mapping entry and notes the repeated keys; for
//! each of those, another walk fails on that entry's value and reads the line from the error.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// At most this many body bytes parsed to find lines (each repeated key's walk is one parse of
/// the body), so that a body of repeated keys costs a bounded time (a 3 MiB body, the limit,
/// gets the lines of its first two): a body with more repeated keys than that allows reports
/// the first ones.
const PARSE_BUDGET: usize = 8 << 20;

/// The repeated keys of `body` as go-yaml v2's strict decode words them, without its prefix
/// (`line 7: key "a" already set in map`), in the order go-yaml reports them. Empty for a body
/// that is not YAML (the caller reports that).
pub fn repeated_keys(body: &[u8]) -> Vec<String> {
    // Refused by the parse that follows, and slow to scan.
    if super::too_deep(body).is_some() {
        return Vec::new();
    }
    let again = || Some(serde_yaml_ng::Deserializer::from_slice(body));
    repeated_in(
        serde_yaml_ng::Deserializer::from_slice(body),
        again,
        body.len(),
    )
    .unwrap_or_default()
}

/// [`repeated_keys`] of each document of the YAML stream `text`, up to the first that is not
/// YAML: the document's index (from 0) and the message, its line counted from the start of
/// `text`.
pub fn repeated_keys_by_document(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    if super::too_deep(text.as_bytes()).is_some() {
        return out;
    }
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let again = || serde_yaml_ng::Deserializer::from_str(text).nth(i);
        match repeated_in(document, again, text.len()) {
            Some(found) => out.extend(found.into_iter().map(|m| (i, m))),
            // The stream cannot be read past a syntax error.
            None => break,
        }
    }
    out
}

/// The repeated keys of `document`; `again` makes the same document once more for each
/// repeated key's walk, which parses `len` bytes. `None` if the document is not YAML.
fn repeated_in<'de>(
    document: serde_yaml_ng::Deserializer<'de>,
    again: impl Fn() -> Option<serde_yaml_ng::Deserializer<'de>>,
    len: usize,
) -> Option<Vec<String>> {
    let repeats = RefCell::new(Vec::new());
    let walk = Walk {
        next_key: &Cell::new(0),
        fail_at: None,
        repeats: Some(&repeats),
    };
    walk.deserialize(document).ok()?;
    let passes = (PARSE_BUDGET / len.max(1)).max(1);
    let found = repeats
        .into_inner()
        .into_iter()
        .take(passes)
        .map(|(index, key)| {
            let walk = Walk {
                next_key: &Cell::new(0),
                fail_at: Some(index),
                repeats: None,
            };
            let line = again()
                .and_then(|d| walk.deserialize(d).err())
                .and_then(|e| e.location())
                .map_or(0, |l| l.line());
            format!("line {line}: key {key} already set in map")
        })
        .collect();
    Some(found)
}

/// A mapping key as go-yaml v2 resolves and prints it (`%#v` of the decoded value).
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Str(String),
    Int(i128),
    Float(u64),
    Bool(bool),
    Null,
    /// A sequence or mapping as a key: never counted as a repeat.
    Complex,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Str(s) => f.write_str(&crate::authz::go_quote(s)),
            Key::Int(i) => write!(f, "{i}"),
            Key::Float(bits) => write!(f, "{}", f64::from_bits(*bits)),
            Key::Bool(b) => write!(f, "{b}"),
            Key::Null | Key::Complex => f.write_str("<nil>"),
        }
    }
}

/// One walk over the document: numbers the mapping keys in document order; notes repeated
/// ones (`repeats`), or fails on the key numbered `fail_at`.
#[derive(Clone, Copy)]
struct Walk<'a> {
    next_key: &'a Cell<usize>,
    fail_at: Option<usize>,
    repeats: Option<&'a RefCell<Vec<(usize, Key)>>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        loop {
            let index = self.next_key.get();
            self.next_key.set(index + 1);
            let Some(key) = map.next_key_seed(KeySeed)? else {
                return Ok(());
            };
            if self.fail_at == Some(index) {
                // The error carries the value's position.
                map.next_value_seed(FailHere)?;
                return Err(de::Error::custom("no value where one was counted"));
            }
            map.next_value_seed(self)?;
            if let Some(repeats) = self.repeats {
                if key != Key::Complex && !seen.insert(key.clone()) {
                    repeats.borrow_mut().push((index, key));
                }
            }
        }
    }
}

/// Reads a mapping key.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Key, E> {
        Ok(Key::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Key, E> {
        Ok(Key::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Key, E> {
        Ok(Key::Int(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Key, E> {
        Ok(Key::Float(v.to_bits()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(Key::Str(v.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Key, E> {
        Ok(Key::Null)
    }

    fn visit_none<E>(self) -> Result<Key, E> {
        Ok(Key::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Key::Complex)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Key::Complex)
    }
}

/// Fails on the value it is given, as soon as it starts, so that the error carries the
/// position where it starts.
struct FailHere;

impl<'de> DeserializeSeed<'de> for FailHere {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FailHere {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the repeated key's value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(REPEATED))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(REPEATED))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(REPEATED))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(REPEATED))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(REPEATED))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(REPEATED))
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(REPEATED))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(REPEATED))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(REPEATED))
    }
}

/// The error [`FailHere`] raises (never shown: only its position is read).
const REPEATED: &str = "the value of a repeated key";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_with_their_lines_as_go_yaml_reports_them() {
        let body = b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: d1\n  labels:\n    a: x\n    \"a\": y\ndata:\n  a: MQ==\n  b: Mg==\n  a: Mw==\n  b:\n    Mw==\nkind: Secret\n";
        assert_eq!(
            repeated_keys(body),
            [
                "line 7: key \"a\" already set in map",
                "line 11: key \"a\" already set in map",
                "line 13: key \"b\" already set in map",
                "line 14: key \"kind\" already set in map",
            ]
        );
        // JSON is YAML: a body on one line has every key on line 1; the repeats within a
        // value come first.
        assert_eq!(
            repeated_keys(br#"{"a":{"c":1},"a":{"c":2,"c":3}}"#),
            [
                "line 1: key \"c\" already set in map",
                "line 1: key \"a\" already set in map",
            ]
        );
        // Keys of other types print as Go prints them; 1 and "1" are different keys.
        assert_eq!(
            repeated_keys(b"1: a\n\"1\": b\n1: c\ntrue: x\ntrue: y\n"),
            [
                "line 3: key 1 already set in map",
                "line 5: key true already set in map",
            ]
        );
        assert_eq!(
            repeated_keys(b"\"a\\tb\": 1\n\"a\\tb\": 2\n"),
            ["line 2: key \"a\\tb\" already set in map"]
        );
        assert!(repeated_keys(b"a: 1\nb: [1, 1]\n").is_empty());
        // The bodies of kube-apiserver's field validation integration test (a Deployment
        // with repeated fields), with the lines it expects.
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dupename\n  name: d\n  unknownMeta: metaVal\n  labels:\n    app: nginx\nspec:\n  unknown1: val1\n  unknownDupe: valDupe\n  unknownDupe: valDupe2\n  paused: true\n  paused: false\n  selector:\n    matchLabels:\n      app: nginx\n  template:\n    metadata:\n      labels:\n        app: nginx\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:latest\n        unknownNested: val1\n        imagePullPolicy: Always\n        imagePullPolicy: Never";
        assert_eq!(
            repeated_keys(yaml.as_bytes()),
            [
                "line 5: key \"name\" already set in map",
                "line 12: key \"unknownDupe\" already set in map",
                "line 14: key \"paused\" already set in map",
                "line 28: key \"imagePullPolicy\" already set in map",
            ]
        );
        let json = "{\n\t\t\"apiVersion\": \"apps/v1\",\n\t\t\"kind\": \"Deployment\",\n\t\t\"metadata\": {\n\t\t\t\"name\": \"d\",\n\t\t\t\"labels\": {\"app\": \"nginx\"}\n\t\t},\n\t\t\"spec\": {\n\t\t\t\"paused\": false,\n\t\t\t\"paused\": true,\n\t\t\t\"selector\": {\n\t\t\t\t\"matchLabels\": {\n\t\t\t\t\t\"app\": \"nginx\"\n\t\t\t\t}\n\t\t\t},\n\t\t\t\"template\": {\n\t\t\t\t\"metadata\": {\n\t\t\t\t\t\"labels\": {\n\t\t\t\t\t\t\"app\": \"nginx\"\n\t\t\t\t\t}\n\t\t\t\t},\n\t\t\t\t\"spec\": {\n\t\t\t\t\t\"containers\": [{\n\t\t\t\t\t\t\"name\":  \"nginx\",\n\t\t\t\t\t\t\"image\": \"nginx:latest\",\n\t\t\t\t\t\t\"imagePullPolicy\": \"Never\",\n\t\t\t\t\t\t\"imagePullPolicy\": \"Always\"\n\t\t\t\t\t}]\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}";
        assert_eq!(
            repeated_keys(json.as_bytes()),
            [
                "line 10: key \"paused\" already set in map",
                "line 27: key \"imagePullPolicy\" already set in map",
            ]
        );
        assert!(
            repeated_keys(b"a: [").is_empty(),
            "not YAML: reported elsewhere"
        );
    }
}
