//! S2 record framing: metered sizes, JSON escaping and `AppendInput` bodies.
//!
//! Bodies are written for S2's default `raw` format, where record bodies and
//! header values are UTF-8 text carried as JSON strings.

/// Largest metered size of one record, and of one append batch (1 MiB).
pub const MAX_METERED_BYTES: usize = 1024 * 1024;
/// Most records S2 accepts in one append batch.
pub const MAX_BATCH_RECORDS: usize = 1000;
/// Longest fencing token S2 accepts, in bytes.
pub const MAX_FENCING_TOKEN_BYTES: usize = 36;

/// Fixed part of every record's metered size.
const RECORD_OVERHEAD: usize = 8;
/// Largest body a header-less record can carry.
pub const MAX_DATA_BODY_BYTES: usize = MAX_METERED_BYTES - RECORD_OVERHEAD;

/// Metered size of a header-less data record.
pub fn data_record_size(body: &str) -> usize {
    RECORD_OVERHEAD + body.len()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// For each byte that [`needs_escape`]: the letter of its short escape
/// (`\n`, `\"`, ...), or `u` for `\u00XX`.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Bytes checked together, in vector registers, for one that needs escaping.
const SCAN_BLOCK: usize = 16;

/// `"`, `\` and the control characters below U+0020. Written with `|` rather
/// than `||` so that a block of bytes is checked at once.
fn needs_escape(byte: u8) -> bool {
    (byte < 0x20) | (byte == b'"') | (byte == b'\\')
}

/// Whether any byte of `block` [`needs_escape`], checked without branching
/// per byte.
fn any_needs_escape(block: &[u8; SCAN_BLOCK]) -> bool {
    block
        .iter()
        .fold(false, |any, &byte| any | needs_escape(byte))
}

/// Appends `text` to `out` as a JSON string literal, quotes included.
///
/// Only `"`, `\` and control characters below U+0020 need escaping; every
/// other character, including U+2028/U+2029 and astral planes, is copied as
/// UTF-8, one run of clean bytes at a time. Model output rarely needs an
/// escape, so runs are found a block of bytes at a time.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        let block = bytes
            .get(at..at + SCAN_BLOCK)
            .and_then(|block| <&[u8; SCAN_BLOCK]>::try_from(block).ok());
        let rest: &[u8] = match block {
            Some(block) if !any_needs_escape(block) => {
                at += SCAN_BLOCK;
                continue;
            }
            Some(block) => block,
            None => &bytes[at..],
        };
        let Some(offset) = rest.iter().position(|&byte| needs_escape(byte)) else {
            break;
        };
        let special = at + offset;
        out.extend_from_slice(&bytes[copied..special]);
        write_escape(out, bytes[special]);
        copied = special + 1;
        at = copied;
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

fn write_escape(out: &mut Vec<u8>, byte: u8) {
    match ESCAPE[usize::from(byte)] {
        b'u' => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0x0f)],
        ]),
        escape => out.extend_from_slice(&[b'\\', escape]),
    }
}

/// Appends the decimal digits of `value`.
pub fn write_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Splits `text` into pieces that each fit in one data record, cutting only
/// on character boundaries. Readers concatenate bodies, so the text is kept.
pub fn split_for_records(text: &str) -> impl Iterator<Item = &str> {
    split_at_most(text, MAX_DATA_BODY_BYTES)
}

fn split_at_most(text: &str, limit: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(limit);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// Decodes UTF-8 in which lone surrogates were encoded as three-byte
/// sequences (what Python's `surrogatepass` produces), replacing each
/// surrogate, and any other invalid sequence, with one U+FFFD.
pub fn replace_lone_surrogates(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                break;
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push('\u{FFFD}');
                let is_surrogate = after.len() >= 3
                    && after[0] == 0xED
                    && (0xA0..=0xBF).contains(&after[1])
                    && (0x80..=0xBF).contains(&after[2]);
                let skip = if is_surrogate {
                    3
                } else {
                    error.error_len().unwrap_or(after.len())
                };
                rest = &after[skip..];
            }
        }
    }
    out
}

/// Appends the closing part of an `AppendInput` whose records array is open.
fn close_append_input(out: &mut Vec<u8>, fencing_token: Option<&str>, match_seq_num: Option<u64>) {
    out.push(b']');
    if let Some(token) = fencing_token {
        out.extend_from_slice(b",\"fencing_token\":");
        write_json_string(out, token);
    }
    if let Some(seq_num) = match_seq_num {
        out.extend_from_slice(b",\"match_seq_num\":");
        write_u64(out, seq_num);
    }
    out.push(b'}');
}

/// The opening of an `AppendInput` body, up to its records array.
pub const APPEND_INPUT_OPEN: &[u8] = b"{\"records\":[";

/// Appends one header-less data record object.
pub fn write_data_record(out: &mut Vec<u8>, body: &str) {
    out.extend_from_slice(b"{\"body\":");
    write_json_string(out, body);
    out.push(b'}');
}

/// Where the records array of a framed `AppendInput` ends: the `]` before
/// `,"fencing_token":` or, without a token, before the closing fields. Bodies
/// are JSON strings, whose quotes are escaped, so the pattern cannot occur
/// inside one.
fn records_end(append_input: &[u8]) -> Option<usize> {
    const CLOSE: &[u8] = b"],\"fencing_token\":";
    append_input
        .windows(CLOSE.len())
        .rposition(|window| window == CLOSE)
}

/// Joins consecutive framed batches of one stream into one `AppendInput`:
/// all their records, under the first batch's fencing token and
/// `match_seq_num`. `None` unless every part is a framed data batch with a
/// fencing token.
pub fn merge_append_inputs(parts: &[&[u8]]) -> Option<Vec<u8>> {
    let (first, rest) = parts.split_first()?;
    let first_end = records_end(first)?;
    let mut merged = Vec::with_capacity(parts.iter().map(|part| part.len()).sum());
    merged.extend_from_slice(&first[..first_end]);
    for part in rest {
        let end = records_end(part)?;
        let records = part.get(APPEND_INPUT_OPEN.len()..end)?;
        if !part.starts_with(APPEND_INPUT_OPEN) || records.is_empty() {
            return None;
        }
        merged.push(b',');
        merged.extend_from_slice(records);
    }
    merged.extend_from_slice(&first[first_end..]);
    Some(merged)
}

/// A whole `AppendInput` holding one fence command that sets `new_token`.
///
/// `fencing_token` is the token the stream must currently have (`Some("")`
/// for a new stream); `None` appends without a token check, as a stop does.
pub fn fence_append_input(
    new_token: &str,
    fencing_token: Option<&str>,
    match_seq_num: Option<u64>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + new_token.len());
    out.extend_from_slice(APPEND_INPUT_OPEN);
    out.extend_from_slice(b"{\"headers\":[[\"\",\"fence\"]],\"body\":");
    write_json_string(&mut out, new_token);
    out.push(b'}');
    close_append_input(&mut out, fencing_token, match_seq_num);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(json("plain"), "\"plain\"");
        assert_eq!(json("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(json("\n\r\t\u{8}\u{c}"), "\"\\n\\r\\t\\b\\f\"");
        assert_eq!(json("\u{0}\u{1f}"), "\"\\u0000\\u001f\"");
        assert_eq!(json("\u{7f}é😀\u{2028}"), "\"\u{7f}é😀\u{2028}\"");
    }

    #[test]
    fn escapes_wherever_they_fall_against_scan_blocks() {
        for length in [1, 15, 16, 17, 33, 70] {
            for at in 0..length {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let mut text: String = "é-abcdefghij😀".chars().cycle().take(length).collect();
                    text.replace_range(
                        text.char_indices()
                            .nth(at)
                            .map(|(i, c)| i..i + c.len_utf8())
                            .unwrap(),
                        &special.to_string(),
                    );
                    assert_eq!(
                        json(&text),
                        serde_json::to_string(&text).unwrap(),
                        "{text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn writes_decimal_numbers() {
        for value in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }
    }

    #[test]
    fn metered_size_matches_s2_formula() {
        assert_eq!(data_record_size("hello"), 13);
        assert_eq!(data_record_size("héllo"), 8 + 6);
    }

    #[test]
    fn split_keeps_pieces_within_limit_on_char_boundaries() {
        let text = "aé😀".repeat(10);
        let pieces: Vec<&str> = split_at_most(&text, 5).collect();
        assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= 5));
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_for_records("").count(), 0);
    }

    #[test]
    fn split_of_large_text_fits_records() {
        let text = "ü".repeat(MAX_DATA_BODY_BYTES);
        let pieces: Vec<&str> = split_for_records(&text).collect();
        assert_eq!(pieces.len(), 2);
        assert!(pieces
            .iter()
            .all(|p| data_record_size(p) <= MAX_METERED_BYTES));
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn lone_surrogates_become_one_replacement_each() {
        // "a", U+D800 as surrogatepass bytes, "b", U+DFFF, then a stray byte.
        let bytes = b"a\xed\xa0\x80b\xed\xbf\xbf\xffc";
        assert_eq!(
            replace_lone_surrogates(bytes),
            "a\u{FFFD}b\u{FFFD}\u{FFFD}c"
        );
        assert_eq!(replace_lone_surrogates("héllo".as_bytes()), "héllo");
    }

    #[test]
    fn merges_batches_under_the_first_ones_token_and_seq_num() {
        let a = b"{\"records\":[{\"body\":\"a\"}],\"fencing_token\":\"t\",\"match_seq_num\":1}";
        let b = b"{\"records\":[{\"body\":\"],\\\"fencing_token\\\":\"},{\"body\":\"c\"}],\"fencing_token\":\"t\",\"match_seq_num\":2}";
        let merged = merge_append_inputs(&[a, b]).unwrap();
        assert_eq!(
            String::from_utf8(merged).unwrap(),
            "{\"records\":[{\"body\":\"a\"},{\"body\":\"],\\\"fencing_token\\\":\"},{\"body\":\"c\"}],\
             \"fencing_token\":\"t\",\"match_seq_num\":1}"
        );
        assert_eq!(merge_append_inputs(&[a]).unwrap(), a.to_vec());
        assert!(merge_append_inputs(&[]).is_none());
        assert!(merge_append_inputs(&[a, b"not a batch"]).is_none());
    }

    #[test]
    fn fence_input_shapes() {
        let body = fence_append_input("session-1", Some(""), Some(0));
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"records\":[{\"headers\":[[\"\",\"fence\"]],\"body\":\"session-1\"}],\
             \"fencing_token\":\"\",\"match_seq_num\":0}"
        );
        let stop = fence_append_input("end-1", None, None);
        assert_eq!(
            String::from_utf8(stop).unwrap(),
            "{\"records\":[{\"headers\":[[\"\",\"fence\"]],\"body\":\"end-1\"}]}"
        );
    }
}
