//! The checks S2 makes of an `AppendInput` before it applies it, for the
//! embedded stores: the JSON shape, 1 to 1000 records, S2's metered-size
//! limits and the fencing token's length. A batch that fails one is refused
//! whole, with a message naming the check.
//!
//! The JSON is read by `serde_json` through visitors of our own, so each
//! record's body is borrowed from the input (copied only where it holds an
//! escape) and nothing else is built: no map per record, as a generic parse
//! would make.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::framing::{
    data_record_size, MAX_BATCH_RECORDS, MAX_FENCING_TOKEN_BYTES, MAX_METERED_BYTES,
};

/// Fixed part of each header's metered size, beside its name and value.
const HEADER_OVERHEAD: usize = 2;

/// A record's header: its name and value.
pub type Header<'a> = (Cow<'a, str>, Cow<'a, str>);

/// An `AppendInput` that passed the checks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckedAppend<'a> {
    /// Every record's body, in order.
    pub bodies: Vec<Cow<'a, str>>,
    /// The records that have headers: their index, and the headers.
    pub headed: Vec<(usize, Vec<Header<'a>>)>,
    /// The token the stream must have for the append to apply.
    pub fencing_token: Option<Cow<'a, str>>,
    /// The tail the stream must have for the append to apply.
    pub match_seq_num: Option<u64>,
    /// The index of the batch's last fence command: its body is the stream's
    /// token once the batch is applied.
    pub last_fence: Option<usize>,
}

impl CheckedAppend<'_> {
    /// The token the stream has once the batch is applied, if it sets one.
    pub fn new_fencing_token(&self) -> Option<&str> {
        self.last_fence.map(|index| self.bodies[index].as_ref())
    }
}

/// Why an `AppendInput` was refused: S2's check that it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAppend(pub String);

impl fmt::Display for InvalidAppend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidAppend {}

fn invalid(message: &str) -> InvalidAppend {
    InvalidAppend(message.to_owned())
}

/// The checked batch of an `AppendInput` body, or the check it failed.
pub fn check_append_input(input: &[u8]) -> Result<CheckedAppend<'_>, InvalidAppend> {
    // A struct's visitor would also take a JSON array in its place; an
    // AppendInput is an object.
    if input.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(invalid("append input must be a JSON object with records"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(input);
    let checked = AppendVisitor
        .deserialize(&mut deserializer)
        .and_then(|checked| deserializer.end().map(|()| checked))
        .map_err(|error| {
            if error.is_data() {
                InvalidAppend(error.to_string())
            } else {
                InvalidAppend(format!("append input is not valid JSON: {error}"))
            }
        })?;
    check_sizes(&checked)?;
    Ok(checked)
}

/// S2's metered-size limits: of the batch, and of a record within it.
fn check_sizes(checked: &CheckedAppend<'_>) -> Result<(), InvalidAppend> {
    let mut headed = checked.headed.iter().peekable();
    let mut batch_bytes = 0;
    let mut record_over = false;
    for (index, body) in checked.bodies.iter().enumerate() {
        let mut size = data_record_size(body);
        if let Some((_, headers)) = headed.next_if(|(at, _)| *at == index) {
            size += headers
                .iter()
                .map(|(name, value)| HEADER_OVERHEAD + name.len() + value.len())
                .sum::<usize>();
        }
        record_over |= size > MAX_METERED_BYTES;
        batch_bytes += size;
    }
    if record_over {
        return Err(invalid("a record exceeds 1 MiB metered"));
    }
    if batch_bytes > MAX_METERED_BYTES {
        return Err(invalid("a batch exceeds 1 MiB metered"));
    }
    Ok(())
}

/// A JSON string, borrowed from the input unless it holds an escape; the
/// text says what was expected in its place when it is not a string.
struct Text(&'static str);

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }
    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }
}

/// What the seed `S` reads, or None for null.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

/// `match_seq_num`: a non-negative integer.
struct MatchSeqNum;

impl<'de> DeserializeSeed<'de> for MatchSeqNum {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_u64(self)
    }
}

impl<'de> Visitor<'de> for MatchSeqNum {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("match_seq_num as a non-negative integer")
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(value)
    }
}

/// The top-level object: its records, `fencing_token` and `match_seq_num`.
struct AppendVisitor;

impl<'de> DeserializeSeed<'de> for AppendVisitor {
    type Value = CheckedAppend<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AppendVisitor {
    type Value = CheckedAppend<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with records")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut checked = CheckedAppend::default();
        let mut has_records = false;
        while let Some(key) = map.next_key_seed(Text("a key"))? {
            match key.as_ref() {
                "records" => {
                    // A repeated key counts once, its last value, as a
                    // generic JSON reader keeps it.
                    checked.bodies.clear();
                    checked.headed.clear();
                    checked.last_fence = None;
                    map.next_value_seed(Records(&mut checked))?;
                    has_records = true;
                }
                "fencing_token" => {
                    checked.fencing_token =
                        map.next_value_seed(Nullable(Text("fencing_token as a string")))?;
                }
                "match_seq_num" => {
                    checked.match_seq_num = map.next_value_seed(Nullable(MatchSeqNum))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !has_records {
            return Err(de::Error::custom(
                "append input must be a JSON object with records",
            ));
        }
        if checked.bodies.is_empty() {
            return Err(batch_count_error());
        }
        Ok(checked)
    }
}

fn batch_count_error<E: de::Error>() -> E {
    E::custom(format!("a batch holds 1 to {MAX_BATCH_RECORDS} records"))
}

/// The `records` list, each record added to the batch as it is read (a list
/// longer than S2 allows is refused at its first record too many).
struct Records<'c, 'de>(&'c mut CheckedAppend<'de>);

impl<'de> DeserializeSeed<'de> for Records<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Records<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "records as a list of 1 to {MAX_BATCH_RECORDS} records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut records: A) -> Result<(), A::Error> {
        let checked = self.0;
        while let Some((body, headers)) = records.next_element_seed(Record)? {
            if checked.bodies.len() == MAX_BATCH_RECORDS {
                return Err(batch_count_error());
            }
            if !headers.is_empty() {
                if let [(name, value)] = headers.as_slice() {
                    if name.is_empty() && value == "fence" {
                        if body.len() > MAX_FENCING_TOKEN_BYTES {
                            return Err(de::Error::custom(format!(
                                "fencing token exceeds {MAX_FENCING_TOKEN_BYTES} bytes"
                            )));
                        }
                        checked.last_fence = Some(checked.bodies.len());
                    }
                }
                checked.headed.push((checked.bodies.len(), headers));
            }
            checked.bodies.push(body);
        }
        Ok(())
    }
}

/// One record: its body (empty when absent) and its headers (none when
/// absent, null or empty).
struct Record;

impl<'de> DeserializeSeed<'de> for Record {
    type Value = (Cow<'de, str>, Vec<Header<'de>>);
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Record {
    type Value = (Cow<'de, str>, Vec<Header<'de>>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record: an object with a string body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut body = Cow::Borrowed("");
        let mut headers = Vec::new();
        while let Some(key) = map.next_key_seed(Text("a key"))? {
            match key.as_ref() {
                "body" => body = map.next_value_seed(Text("a record's body as a string"))?,
                "headers" => {
                    headers = map.next_value_seed(Nullable(Headers))?.unwrap_or_default();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((body, headers))
    }
}

/// A record's headers: a list of `[name, value]` pairs of strings.
struct Headers;

impl<'de> DeserializeSeed<'de> for Headers {
    type Value = Vec<Header<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Headers {
    type Value = Vec<Header<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("headers as a list of [name, value] pairs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut pairs: A) -> Result<Self::Value, A::Error> {
        let mut headers = Vec::new();
        while let Some(header) = pairs.next_element_seed(HeaderPair)? {
            headers.push(header);
        }
        Ok(headers)
    }
}

/// One header: `[name, value]`.
struct HeaderPair;

const HEADER_PAIR: &str = "a header as a [name, value] pair of strings";

impl<'de> DeserializeSeed<'de> for HeaderPair {
    type Value = Header<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for HeaderPair {
    type Value = Header<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HEADER_PAIR)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut parts: A) -> Result<Self::Value, A::Error> {
        let name = parts
            .next_element_seed(Text(HEADER_PAIR))?
            .ok_or_else(|| de::Error::invalid_length(0, &HEADER_PAIR))?;
        let value = parts
            .next_element_seed(Text(HEADER_PAIR))?
            .ok_or_else(|| de::Error::invalid_length(1, &HEADER_PAIR))?;
        if parts.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &HEADER_PAIR));
        }
        Ok((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(input: &str) -> String {
        check_append_input(input.as_bytes()).unwrap_err().0
    }

    #[test]
    fn reads_bodies_headers_token_and_match() {
        let input = br#" {"records":[{"body":"a"},{"headers":[["","fence"]],"body":"session-b"},
            {"body":"\u00e9\n"},{}],"fencing_token":"session-a","match_seq_num":3,"other":[1,{}]}"#;
        let checked = check_append_input(input).unwrap();
        assert_eq!(checked.bodies, ["a", "session-b", "é\n", ""]);
        assert!(matches!(checked.bodies[0], Cow::Borrowed(_)));
        assert_eq!(
            checked.headed,
            [(1, vec![(Cow::Borrowed(""), Cow::Borrowed("fence"))])]
        );
        assert_eq!(checked.fencing_token.as_deref(), Some("session-a"));
        assert_eq!(checked.match_seq_num, Some(3));
        assert_eq!(checked.new_fencing_token(), Some("session-b"));
    }

    #[test]
    fn the_last_fence_sets_the_token_and_other_headers_do_not() {
        let input = br#"{"records":[{"headers":[["","fence"]],"body":"one"},
            {"headers":[["x","fence"]],"body":"two"},{"headers":[],"body":"three"},
            {"headers":null,"body":"four"},{"headers":[["","fence"]],"body":"five"},
            {"headers":[["","fence"],["a","b"]],"body":"six"}]}"#;
        let checked = check_append_input(input).unwrap();
        assert_eq!(checked.new_fencing_token(), Some("five"));
        let indexes: Vec<usize> = checked.headed.iter().map(|(index, _)| *index).collect();
        assert_eq!(indexes, [0, 1, 4, 5]);
        assert_eq!(checked.fencing_token, None);
        assert_eq!(checked.match_seq_num, None);
    }

    #[test]
    fn refuses_what_s2_refuses() {
        for (input, message) in [
            ("not json", "JSON object with records"),
            (r#"{"records":[{"body":"x"}"#, "not valid JSON"),
            ("[]", "JSON object with records"),
            ("{}", "JSON object with records"),
            (r#"{"records":[]}"#, "1 to 1000 records"),
            (r#"{"records":{}}"#, "1 to 1000 records"),
            (
                r#"{"records":[{"body":"x"}, "x"]}"#,
                "an object with a string body",
            ),
            (r#"{"records":[["x"]]}"#, "an object with a string body"),
            (r#"{"records":[{"body":7}]}"#, "body as a string"),
            (r#"{"records":[{"body":null}]}"#, "body as a string"),
            (
                r#"{"records":[{"headers":"fence"}]}"#,
                "[name, value] pairs",
            ),
            (
                r#"{"records":[{"headers":[["","fence","x"]]}]}"#,
                "[name, value] pair",
            ),
            (r#"{"records":[{"headers":[[""]]}]}"#, "[name, value] pair"),
            (
                r#"{"records":[{"headers":[[1,"fence"]]}]}"#,
                "[name, value] pair",
            ),
            (
                r#"{"records":[{}],"fencing_token":5}"#,
                "fencing_token as a string",
            ),
            (
                r#"{"records":[{}],"match_seq_num":-1}"#,
                "non-negative integer",
            ),
            (
                r#"{"records":[{}],"match_seq_num":1.0}"#,
                "non-negative integer",
            ),
            (
                r#"{"records":[{}],"match_seq_num":true}"#,
                "non-negative integer",
            ),
            (r#"{"records":[{}]} x"#, "not valid JSON"),
            (r#"{"records":[{"body":"\ud800"}]}"#, "not valid JSON"),
        ] {
            let got = refused(input);
            assert!(got.contains(message), "{input}: {got}");
        }
        let token = format!(
            r#"{{"records":[{{"headers":[["","fence"]],"body":"{}"}}]}}"#,
            "t".repeat(37)
        );
        assert!(refused(&token).contains("fencing token exceeds 36 bytes"));
    }

    #[test]
    fn counts_records_and_metered_bytes_as_s2_does() {
        let records = |count: usize| {
            let record = r#"{"body":"x"},"#.repeat(count);
            format!(r#"{{"records":[{}]}}"#, &record[..record.len() - 1])
        };
        assert_eq!(
            check_append_input(records(1000).as_bytes())
                .unwrap()
                .bodies
                .len(),
            1000
        );
        assert!(refused(&records(1001)).contains("1 to 1000 records"));
        let body = |text: &str| format!(r#"{{"records":[{{"body":"{text}"}}]}}"#);
        // 8 bytes a record, and the body in UTF-8 bytes, not characters.
        assert!(check_append_input(body(&"x".repeat(MAX_METERED_BYTES - 8)).as_bytes()).is_ok());
        assert!(refused(&body(&"x".repeat(MAX_METERED_BYTES - 7))).contains("record exceeds"));
        assert!(check_append_input(body(&"é".repeat(512 * 1024 - 4)).as_bytes()).is_ok());
        assert!(refused(&body(&"é".repeat(512 * 1024 - 3))).contains("record exceeds"));
        // Headers count 2 bytes each, beside their name and value.
        let headed = |size: usize| {
            format!(
                r#"{{"records":[{{"headers":[["ab","cd"]],"body":"{}"}}]}}"#,
                "x".repeat(size)
            )
        };
        assert!(check_append_input(headed(MAX_METERED_BYTES - 14).as_bytes()).is_ok());
        assert!(refused(&headed(MAX_METERED_BYTES - 13)).contains("record exceeds"));
        let two = format!(
            r#"{{"records":[{{"body":"{0}"}},{{"body":"{0}"}}]}}"#,
            "x".repeat(600_000)
        );
        assert!(refused(&two).contains("batch exceeds"));
    }

    #[test]
    fn a_repeated_records_key_counts_its_last_value() {
        let input = br#"{"records":[{"headers":[["","fence"]],"body":"t"},{"body":"a"}],
            "records":[{"body":"b"}]}"#;
        let checked = check_append_input(input).unwrap();
        assert_eq!(checked.bodies, ["b"]);
        assert!(checked.headed.is_empty());
        assert_eq!(checked.new_fencing_token(), None);
    }
}
