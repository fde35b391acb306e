//! Where a problem is in the rules file's JSON, said for people: the JSON path
//! (`routes[1].limit`), and for text that is not JSON, the line, column and what was found.

use super::{InvalidRule, Location};

/// The location as the rest of the crate writes it: `routes[1].limit`, `clients["id:a b"]`,
/// `.` for the document itself. Positions serde could not name are left out, and keys that
/// are not plain names are quoted, so the path is never empty or ambiguous.
pub(super) fn json_path_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => push_key(&mut out, key),
            Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Appends `key` to the path `out`: `.key`, or `["key"]` when the key is not a plain name.
pub(super) fn push_key(out: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':');
    if plain {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
    } else {
        out.push_str(&format!("[{}]", serde_json::Value::from(key)));
    }
}

/// Where a serde_json error is and what it says: for text that is not JSON, what was found
/// there and what was expected instead; for a document of the wrong shape, serde's message.
pub(super) fn json_problem(
    text: &str,
    json_path: String,
    err: &serde_json::Error,
) -> (Location, InvalidRule) {
    use serde_json::error::Category;
    // serde_json appends " at line L column C"; the location is reported separately.
    let message = err.to_string();
    let message = message
        .rfind(" at line ")
        .map_or(message.as_str(), |at| &message[..at]);
    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut line_column = (err.line() > 0).then(|| (narrow(err.line()), narrow(err.column())));
    if !matches!(err.classify(), Category::Syntax | Category::Eof) {
        let location = Location {
            json_path,
            line_column,
        };
        return (location, InvalidRule::Json(message.to_owned()));
    }
    let found = match (err.classify(), line_column) {
        (Category::Syntax, Some((line, _))) => {
            // The column is 1-based, in bytes, at the character that does not fit.
            let line_start = line_start(text, err.line());
            let mut at = (line_start + err.column().saturating_sub(1)).min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            // A misspelt `true`, `false` or `null` is reported inside the word; show it whole.
            if message == "expected ident" {
                while at > line_start && is_word_byte(text.as_bytes()[at - 1]) {
                    at -= 1;
                }
                line_column = Some((line, narrow(at - line_start + 1)));
            }
            snippet(&text[at..])
        }
        _ => None,
    };
    if err.classify() == Category::Eof {
        // serde_json points at the last character; the end of the file is just past it.
        line_column = line_column.map(|(line, column)| (line, column.saturating_add(1)));
    }
    let location = Location {
        json_path,
        line_column: line_column.map(|(line, column)| (line, column.max(1))),
    };
    let problem = InvalidRule::NotJson {
        found: found.unwrap_or_else(|| "the end of the file".into()),
        context: syntax_context(message),
    };
    (location, problem)
}

/// serde_json's message for a syntax error, said as what was expected where the error is.
fn syntax_context(message: &str) -> String {
    match message {
        "expected value" | "expected ident" | "EOF while parsing a value" => {
            "where a value was expected"
        }
        "expected `:`" => "where `:` was expected",
        "expected `,` or `]`" => "where `,` or `]` was expected",
        "expected `,` or `}`" => "where `,` or `}` was expected",
        "expected `\"`" | "key must be a string" => "where a key in double quotes was expected",
        "trailing comma" => "after a trailing comma",
        "trailing characters" => "after the end of the JSON document",
        "EOF while parsing a list" => "before the list was closed with `]`",
        "EOF while parsing an object" => "before the object was closed with `}`",
        "EOF while parsing a string" => "before the string was closed with `\"`",
        other => return format!("({other})"),
    }
    .to_owned()
}

/// Byte offset of the 1-based `line`.
fn line_start(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 2)
        .map_or(text.len(), |(at, _)| at + 1)
}

/// 1-based line and column (in bytes, as serde_json counts) of the end of `before`.
pub(super) fn line_column_at(before: &[u8]) -> (u32, u32) {
    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    (narrow(line), narrow(before.len() - line_start + 1))
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'+' | b'.')
}

/// What was found where `rest` starts, quoted and escaped: a word (up to 20 characters) or
/// one character.
fn snippet(rest: &str) -> Option<String> {
    let first = rest.chars().next()?;
    let len = if first.is_ascii() && is_word_byte(first as u8) {
        rest.bytes()
            .take(20)
            .take_while(|b| is_word_byte(*b))
            .count()
    } else {
        first.len_utf8()
    };
    Some(format!("{:?}", &rest[..len]))
}
