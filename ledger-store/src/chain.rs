//! The hash chain: the bytes each event's hash covers, as the append writes them and the
//! verifier recomputes them.
//!
//! `hash = sha256(prev_hash || canonical form)`, `prev_hash` being the hash of the stream's
//! previous event (empty for version 1). The canonical form writes every field but the
//! hashes and the transaction id as `<byte length>:<text>;`, in a fixed order, so that no two
//! different events share a form. The texts are PostgreSQL's: a uuid's lowercase text, a
//! number's digits, the payload's and metadata's jsonb text, the time as microseconds since
//! the Unix epoch. `ledger.event_hash` is the same in SQL; the database recomputes every
//! inserted event's hash with it (`ledger.events_check_chain`) and rejects a statement with a
//! wrong one.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One event's fields as the canonical form takes them.
pub(crate) struct Canonical<'a> {
    pub global_position: i64,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub stream_type: &'a str,
    pub stream_id: Uuid,
    pub stream_version: u64,
    pub event_type: &'a str,
    pub schema_version: i32,
    /// The payload's jsonb text (see [`jsonb_text`]).
    pub payload: &'a str,
    /// The metadata's jsonb text.
    pub metadata: &'a str,
    /// `recorded_at` in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
}

impl Canonical<'_> {
    /// `sha256(previous || canonical form)`, written straight into the hasher.
    pub fn hash(&self, previous: Option<&[u8]>) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(previous.unwrap_or_default());
        let mut field = |text: &str| {
            hasher.update(text.len().to_string());
            hasher.update(b":");
            hasher.update(text);
            hasher.update(b";");
        };
        field(&self.global_position.to_string());
        field(self.event_id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        field(self.organization_id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        field(self.stream_type);
        field(self.stream_id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        field(&self.stream_version.to_string());
        field(self.event_type);
        field(&self.schema_version.to_string());
        field(self.payload);
        field(self.metadata);
        field(&self.recorded_at_micros.to_string());
        hasher.finalize().into()
    }
}

/// The text PostgreSQL gives `text::jsonb::text`: keys sorted (shorter first, then
/// bytewise) with the last of a repeated key kept, `": "` and `", "` between items, strings
/// escaped as jsonb escapes them. `None` for text that is not JSON, and for JSON with a
/// number that is not an integer: numeric's output of a fraction or an exponent is left to
/// PostgreSQL (`EventStore` asks it; domain payloads carry amounts as strings).
pub(crate) fn jsonb_text(json: &str) -> Option<String> {
    let mut reader = Reader { json, at: 0 };
    let mut text = String::with_capacity(json.len() + json.len() / 8);
    reader.value(&mut text)?;
    reader.skip_whitespace();
    (reader.at == json.len()).then_some(text)
}

/// Reads JSON text and writes its jsonb text as it goes, over the bytes (no tree of values:
/// a payroll run's calculation chunk is 700 KB of JSON).
struct Reader<'a> {
    json: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.json.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn value(&mut self, text: &mut String) -> Option<()> {
        self.skip_whitespace();
        match self.peek()? {
            b'{' => self.object(text),
            b'[' => self.array(text),
            b'"' => {
                let string = self.string()?;
                write_jsonb_string(text, &string);
                Some(())
            }
            b'-' | b'0'..=b'9' => self.integer(text),
            _ => {
                let literal =
                    ["true", "false", "null"].into_iter().find(|word| self.json[self.at..].starts_with(word))?;
                self.at += literal.len();
                text.push_str(literal);
                Some(())
            }
        }
    }

    /// An integer as numeric writes it (the same digits, `-0` as `0`); `None` for a fraction
    /// or an exponent.
    fn integer(&mut self, text: &mut String) -> Option<()> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        if self.at == digits || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let number = &self.json[start..self.at];
        text.push_str(if number == "-0" { "0" } else { number });
        Some(())
    }

    /// A string's characters: borrowed when it has no escape, decoded otherwise.
    fn string(&mut self) -> Option<std::borrow::Cow<'a, str>> {
        let bytes = self.json.as_bytes();
        let start = self.at;
        let mut end = start + 1;
        let mut escaped = false;
        loop {
            match *bytes.get(end)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    end += 2;
                }
                _ => end += 1,
            }
        }
        self.at = end + 1;
        if escaped {
            serde_json::from_str::<String>(&self.json[start..=end]).ok().map(std::borrow::Cow::Owned)
        } else {
            Some(std::borrow::Cow::Borrowed(&self.json[start + 1..end]))
        }
    }

    fn array(&mut self, text: &mut String) -> Option<()> {
        self.at += 1;
        text.push('[');
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            text.push(']');
            return Some(());
        }
        loop {
            self.value(text)?;
            self.skip_whitespace();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    text.push_str(", ");
                }
                b']' => {
                    self.at += 1;
                    text.push(']');
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Members sorted as jsonb sorts keys (shorter first, then bytewise), the last of a
    /// repeated key kept.
    fn object(&mut self, text: &mut String) -> Option<()> {
        self.at += 1;
        let mut members: Vec<(std::borrow::Cow<'a, str>, String)> = Vec::new();
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                self.skip_whitespace();
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                self.expect(b':')?;
                let mut value = String::new();
                self.value(&mut value)?;
                members.push((key, value));
                self.skip_whitespace();
                match self.peek()? {
                    b',' => self.at += 1,
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        // A stable sort keeps repeated keys in their order: the last of each run is kept.
        members.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
        text.push('{');
        let mut first = true;
        for (index, (key, value)) in members.iter().enumerate() {
            if members.get(index + 1).is_some_and(|(next, _)| next == key) {
                continue;
            }
            if !first {
                text.push_str(", ");
            }
            first = false;
            write_jsonb_string(text, key);
            text.push_str(": ");
            text.push_str(value);
        }
        text.push('}');
        Some(())
    }
}

/// Whether PostgreSQL has to write this JSON's jsonb text: it has a number with a fraction
/// or an exponent, or with more digits than [`jsonb_text`] takes for sure (18). A scan of the
/// bytes, strings skipped; errs on the side of asking.
pub(crate) fn needs_postgres(json: &str) -> bool {
    let (mut in_string, mut escaped, mut digits) = (false, false, 0);
    for &byte in json.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                digits = 0;
            }
            b'0'..=b'9' => {
                digits += 1;
                if digits > 18 {
                    return true;
                }
            }
            b'.' => return true,
            b'e' | b'E' if digits > 0 => return true,
            _ => digits = 0,
        }
    }
    false
}

/// As PostgreSQL's `escape_json`: the two-character escapes, other control characters as
/// `\u00xx`, everything else (non-ASCII included) as it is.
fn write_jsonb_string(text: &mut String, string: &str) {
    use std::fmt::Write as _;
    text.push('"');
    for character in string.chars() {
        match character {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            '\u{8}' => text.push_str("\\b"),
            '\u{c}' => text.push_str("\\f"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            control if (control as u32) < 0x20 => {
                let _ = write!(text, "\\u{:04x}", control as u32);
            }
            other => text.push(other),
        }
    }
    text.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonb_text_sorts_keys_shorter_first_and_spaces_items() {
        let text = jsonb_text(r#"{"b":[1,{"x":null,"é":"\u0001é/"}],"a":{},"c":[],"aa":-7,"t":true}"#).unwrap();
        assert_eq!(text, r#"{"a": {}, "b": [1, {"x": null, "é": "\u0001é/"}], "c": [], "t": true, "aa": -7}"#);
    }

    #[test]
    fn numbers_with_fractions_exponents_or_many_digits_are_left_to_postgres() {
        for json in [r#"{"a":1.5}"#, r#"{"a":[1e2]}"#, r#"{"a":2E-3}"#, r#"{"a":-1234567890123456789}"#] {
            assert!(needs_postgres(json), "{json}");
        }
        for json in [r#"{"a":"1.5e2","b\"":[true,false,null,-12,123456789012345678]}"#, r#"{"e":1,"E":"x"}"#] {
            assert!(!needs_postgres(json), "{json}");
            assert!(jsonb_text(json).is_some(), "{json}");
        }
    }

    #[test]
    fn jsonb_text_keeps_the_last_of_a_repeated_key() {
        assert_eq!(jsonb_text(r#"{"a":1,"a":2}"#).unwrap(), r#"{"a": 2}"#);
    }

    #[test]
    fn jsonb_text_leaves_fractions_and_exponents_to_postgres() {
        assert_eq!(jsonb_text(r#"{"a":1.50}"#), None);
        assert_eq!(jsonb_text(r#"{"a":1e2}"#), None);
        assert_eq!(jsonb_text("not json"), None);
    }
}

/// The text written here is PostgreSQL's own, for any JSON of strings, integers, booleans,
/// nulls, arrays and objects (keys of any length and characters, repeated ones included).
#[cfg(all(test, feature = "testkit"))]
mod against_postgres {
    use proptest::prelude::*;

    use super::jsonb_text;
    use crate::testkit::TestDatabase;

    fn json() -> impl Strategy<Value = String> {
        let string = "[^\u{0}]{0,12}".prop_map(|text| serde_json::to_string(&text).unwrap());
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|value| value.to_string()),
            any::<i64>().prop_map(|value| value.to_string()),
            any::<u64>().prop_map(|value| value.to_string()),
            string.clone(),
        ]
        .prop_flat_map(|leaf| prop_oneof![Just(leaf.clone()), Just(format!(" {leaf}\n"))]);
        leaf.prop_recursive(4, 48, 6, move |inner| {
            let key = prop_oneof!["[a-c]{1,2}", "[^\u{0}]{0,6}"].prop_map(|key| serde_json::to_string(&key).unwrap());
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((key, inner), 0..6).prop_map(|members| {
                    let members: Vec<String> =
                        members.into_iter().map(|(key, value)| format!("{key} :{value}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    #[test]
    fn jsonb_text_is_what_postgres_writes() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let db = runtime.block_on(TestDatabase::new());
        let config = ProptestConfig { cases: 256, ..ProptestConfig::default() };
        proptest!(config, |(json in json())| {
            let ours = jsonb_text(&json).expect("integers only: written here");
            let theirs: String = runtime
                .block_on(sqlx::query_scalar("select $1::jsonb::text").bind(&json).fetch_one(&db.pool))
                .unwrap();
            prop_assert_eq!(ours, theirs, "{}", json);
        });
        runtime.block_on(async { db.pool.close().await });
    }
}
