//! Error text from serde decoders without the values they quote. serde describes a value of
//! the wrong type or variant by quoting it (`invalid type: string "…", expected a map`,
//! ``unknown variant `…` ``), and in a file that holds keys (an EncryptionConfiguration) or
//! Secret values (a manifest) a misplaced line makes that value a key or a password. Field
//! names (``unknown field `…` ``) stay: they are what the message is about.

/// What redacted text shows in place of a value.
const REDACTED: &str = "<redacted>";

/// `message` (a serde decoder's error) with every quoted value (string, integer, floating point
/// number, character, boolean) and variant replaced by `<redacted>`.
pub fn serde_values(message: &str) -> String {
    let mut out = redact_after(message, "string \"", '"');
    for opener in [
        "unknown variant `",
        "integer `",
        "floating point `",
        "character `",
        "boolean `",
    ] {
        out = redact_after(&out, opener, '`');
    }
    out
}

/// `text` with what follows each `opener`, up to the unescaped `close`, replaced.
fn redact_after(text: &str, opener: &str, close: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(opener) {
        let start = i + opener.len();
        out.push_str(&rest[..start]);
        out.push_str(REDACTED);
        let body = &rest[start..];
        let mut escaped = false;
        let mut end = body.len();
        for (j, c) in body.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == close {
                end = j;
                break;
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_field_names_stay() {
        assert_eq!(
            serde_values(r#"invalid type: string "hunter2", expected a map at line 4 column 13"#),
            r#"invalid type: string "<redacted>", expected a map at line 4 column 13"#
        );
        assert_eq!(
            serde_values(r#"invalid value: string "a\"b", expected x; string "c""#),
            r#"invalid value: string "<redacted>", expected x; string "<redacted>""#
        );
        assert_eq!(
            serde_values("unknown variant `s3cret`, expected one of `a`, `b`"),
            "unknown variant `<redacted>`, expected one of `a`, `b`"
        );
        assert_eq!(
            serde_values("unknown field `spec`, expected `data`"),
            "unknown field `spec`, expected `data`"
        );
        assert_eq!(
            serde_values(r#"string "unterminated"#),
            r#"string "<redacted>"#
        );
        assert_eq!(
            serde_values("invalid type: integer `123456789`, expected a string"),
            "invalid type: integer `<redacted>`, expected a string"
        );
        assert_eq!(
            serde_values("invalid type: floating point `1.5`, expected a string at line 2"),
            "invalid type: floating point `<redacted>`, expected a string at line 2"
        );
        assert_eq!(
            serde_values(r#"data: invalid value: string "s3cr3t, expected x", expected base64"#),
            r#"data: invalid value: string "<redacted>", expected base64"#
        );
        for kept in [
            "invalid type: map, expected a string",
            "missing field `name`",
        ] {
            assert_eq!(serde_values(kept), kept);
        }
    }
}
