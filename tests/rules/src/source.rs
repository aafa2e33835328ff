//! What a Rust source file refers to: the first segment of every path that
//! starts at a crate root (`crate::tls::X`, `use crate::{imports, tls}`,
//! `host::fleet::run`), and whether it names generated WIT types. Comments
//! and the insides of string and character literals are left out first,
//! so text about a module is not a use of it.

use std::collections::BTreeSet;

/// `text` without comments, and with every string and character literal
/// emptied (the quotes stay).
pub fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            // `br"..."` as `r"..."`: the `b` is copied, the raw string emptied.
            b'r' if raw_string_hashes(b, i).is_some()
                && (!ident_byte_before(b, i)
                    || (i > 0 && b[i - 1] == b'b' && !ident_byte_before(b, i - 1))) =>
            {
                let hashes = raw_string_hashes(b, i).unwrap_or(0);
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => {
                i += 3;
                out.push_str("' '");
            }
            _ => {
                // Whole UTF-8 characters.
                let len = utf8_len(b[i]);
                out.push_str(&text[i..i + len]);
                i += len;
            }
        }
    }
    out
}

/// The number of `#` of a raw string starting at `i` (`r"`, `r#"`, ...).
fn raw_string_hashes(b: &[u8], i: usize) -> Option<usize> {
    let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
    (b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

fn ident_byte_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

/// The first segment of every path in `code` (see [`code_only`]) that
/// starts at one of `roots` (such as `crate`, or the library's name in its
/// binary): `tls` for `crate::tls::X`, `imports` and `tls` for
/// `use crate::{imports::log, tls};`.
pub fn root_modules(code: &str, roots: &[&str]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let b = code.as_bytes();
    for root in roots {
        let mut from = 0;
        while let Some(at) = code[from..].find(root).map(|i| i + from) {
            from = at + root.len();
            if ident_byte_before(b, at) {
                continue;
            }
            let rest = code[from..].trim_start();
            let Some(rest) = rest.strip_prefix("::") else {
                continue;
            };
            let rest = rest.trim_start();
            if let Some(group) = rest.strip_prefix('{') {
                found.extend(group_heads(group));
            } else if let Some(name) = ident(rest) {
                found.insert(name.to_string());
            }
        }
    }
    found
}

/// The first identifier of each top-level item of a `{...}` group, given
/// the text after its `{`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    let mut i = 0;
    while i < group.len() {
        let c = group.as_bytes()[i];
        match c {
            b'{' => depth += 1,
            b'}' if depth == 0 => break,
            b'}' => depth -= 1,
            b',' if depth == 0 => item_start = true,
            _ if item_start && depth == 0 && !c.is_ascii_whitespace() => {
                if let Some(name) = ident(&group[i..]) {
                    heads.push(name.to_string());
                    i += name.len();
                    item_start = false;
                    continue;
                }
                item_start = false;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

/// The identifier at the start of `text`, if any.
fn ident(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let name = &text[..end];
    (!name.is_empty() && !name.as_bytes()[0].is_ascii_digit()).then_some(name)
}

/// The first place `code` names generated WIT types: a path through a
/// `wit` or `bindings` module (`wit::types`, `bindings::export!`), or a
/// generated module re-exported under a `_bindings` name.
pub fn generated_mention(code: &str) -> Option<String> {
    let b = code.as_bytes();
    for token in ["wit::", "bindings::", "_bindings"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(token).map(|i| i + from) {
            from = at + token.len();
            let starts_word = token.starts_with('_') || !ident_byte_before(b, at);
            let ends_word = !token.ends_with("bindings")
                || !b
                    .get(from)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
            if starts_word && ends_word {
                let line_start = code[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = code[at..].find('\n').map_or(code.len(), |i| i + at);
                return Some(code[line_start..line_end].trim().to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(text: &str) -> Vec<String> {
        root_modules(&code_only(text), &["crate", "host"])
            .into_iter()
            .collect()
    }

    #[test]
    fn paths_from_a_crate_root_are_found_in_every_form() {
        assert_eq!(heads("use crate::tls::TlsClient;"), ["tls"]);
        assert_eq!(
            heads("use crate::{imports::{log, clock}, tls::{self, X}, sandbox};"),
            ["imports", "sandbox", "tls"]
        );
        assert_eq!(heads("let x = crate :: fleet::run();"), ["fleet"]);
        assert_eq!(heads("use host::update::verify;"), ["update"]);
        assert_eq!(heads("use host_core::settings; use mock_host::X;"), [""; 0]);
    }

    #[test]
    fn comments_and_literals_are_not_uses() {
        let text = "// crate::fleet\n/* crate::cli /* nested */ crate::swap */\n\
                    let s = \"crate::update\"; let r = r#\"crate::metrics\"#;\n\
                    let b = br#\"crate::broker\"#; let c = '{'; let l: &'static str = \"\";\n\
                    use crate::tls;";
        assert_eq!(heads(text), ["tls"]);
    }

    #[test]
    fn generated_types_are_seen_wherever_they_are_named() {
        assert!(generated_mention(&code_only("use host_core::wit::types::Settings;")).is_some());
        assert!(generated_mention("use crate::bindings::mqtt_device::runtime::log;").is_some());
        assert!(generated_mention("use host_core::wit::types_bindings::Settings;").is_some());
        assert_eq!(
            generated_mention("use wit_bindgen::generate; let rebindings = 1;"),
            None
        );
        assert_eq!(
            generated_mention(&code_only("// the wit::types edge\nfn f() {}")),
            None
        );
    }
}
