//! What a config file's parse error says, without a single value from the file.
//!
//! The TOML parser and serde put the offending value into their messages (`invalid
//! type: string "…", expected a sequence`), and a value in this file is often a secret or
//! a database URL with its password. Under systemd the message goes to the journal. So
//! the message is rebuilt from what is safe: the line, the key as written on that line
//! (under its table), and what was expected, which comes from keyservice's own types.

/// Describes `error`, raised parsing `text`: `line N, key K: what was wrong`.
pub fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error.message();
    let what = what_was_wrong(message);
    let Some(span) = error.span() else { return what };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    match key_at(text, start) {
        Some(key) => format!("line {line}, `{key}`: {what}"),
        None => format!("line {line}: {what}"),
    }
}

/// serde's and the parser's message, reduced to what carries no value.
fn what_was_wrong(message: &str) -> String {
    // Field names are the program's own, and safe to repeat.
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return message.trim_end().to_owned();
    }
    let expected = message.rsplit_once(", expected ").map(|(_, expected)| expected_kind(expected.trim_end()));
    let kind = [
        ("invalid type", "has the wrong type"),
        ("invalid value", "has a value that cannot work"),
        ("invalid length", "has the wrong number of items"),
        ("unknown variant", "is not one of the accepted values"),
    ]
    .into_iter()
    .find(|(prefix, _)| message.starts_with(prefix))
    .map(|(_, sentence)| sentence);
    match (kind, expected) {
        (Some(kind), Some(expected)) => format!("{kind}: expected {expected}"),
        (Some(kind), None) => kind.to_owned(),
        // A syntax error: the parser names tokens, and quotes them; keep the words
        // outside quotes only.
        (None, _) => unquoted(message),
    }
}

/// What serde says was expected, in the config's own words (`struct FileStorage` is a
/// table to whoever writes the file).
fn expected_kind(expected: &str) -> String {
    if expected.starts_with("struct ") || expected.starts_with("a map") {
        "a table".to_owned()
    } else if matches!(expected, "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" | "a nonzero u32") {
        "a whole number".to_owned()
    } else if expected == "a boolean" {
        "true or false".to_owned()
    } else {
        unquoted(expected)
    }
}

/// `text` without anything between backticks or double quotes.
fn unquoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '`' | '"') => {
                quote = Some(c);
                out.push('…');
            }
            (Some(open), c) if c == open => quote = None,
            (None, c) => out.push(c),
            (Some(_), _) => {}
        }
    }
    out.trim_end().to_owned()
}

/// The key of the line holding byte `at`, under the table it is in: `storage`,
/// `namespaces.shop.credentials[].secret`. Only what stands left of `=` is read, and
/// only when it looks like a key.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let (left, _) = line.split_once('=')?;
    let key = left.trim();
    let is_key = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"'))
        && key.chars().filter(|c| *c == '"').count() % 2 == 0;
    if !is_key {
        return None;
    }
    let table = text[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('['));
    Some(match table {
        Some(header) if header.starts_with("[[") => {
            format!("{}[].{key}", header.trim_start_matches('[').split(']').next().unwrap_or_default().trim())
        }
        Some(header) => {
            format!("{}.{key}", header.trim_start_matches('[').split(']').next().unwrap_or_default().trim())
        }
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Only its errors are read.
    struct Shape {
        listen: Option<String>,
        min_free_bytes: Option<u64>,
        storage: Option<Table>,
        namespaces: Option<std::collections::BTreeMap<String, Namespace>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Table {
        url: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Namespace {
        credentials: Vec<Credential>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Credential {
        key_id: String,
        secret: String,
    }

    fn error_of(text: &str) -> String {
        let error = toml::from_str::<Shape>(text).unwrap_err();
        describe(text, &error)
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_key_and_never_shown() {
        let said = error_of("listen = \"x\"\nstorage = \"postgres://ks:Hunter2Password@db/ks\"\n");
        assert_eq!(said, "line 2, `storage`: has the wrong type: expected a table");
        let said = error_of("[namespaces.shop]\ncredentials = \"Fj3kSecretSecret\"\n");
        assert_eq!(said, "line 2, `namespaces.shop.credentials`: has the wrong type: expected a sequence");
        let said = error_of("min_free_bytes = \"Hunter2Password\"\n");
        assert!(!said.contains("Hunter2"), "{said}");
        assert_eq!(said, "line 1, `min_free_bytes`: has the wrong type: expected a whole number");
        let said = error_of("[[namespaces.shop.credentials]]\nkey_id = \"k\"\nsecret = 12345678901234567890\n");
        assert!(!said.contains("1234567890"), "{said}");
        assert!(said.contains("namespaces.shop.credentials[].secret"), "{said}");
    }

    #[test]
    fn syntax_errors_keep_their_words_and_lose_their_quotes() {
        let said = error_of("listen = \"unterminated Hunter2Password\n");
        assert!(!said.contains("Hunter2"), "{said}");
        assert!(said.starts_with("line 1"), "{said}");
        let said = error_of("listen = 'x'\nmax_conections = 5\n");
        assert!(said.contains("unknown field `max_conections`"), "{said}");
    }
}
