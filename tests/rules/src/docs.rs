//! The manual's own rules: every link between its pages (and from the
//! README) reaches a file of the repository, and a heading where it names
//! one; `docs/SUMMARY.md` lists every chapter, and only chapters that
//! exist.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::check::Violation;

/// A Markdown page: its path from the repository root, and its text.
#[derive(Debug, Clone)]
pub struct Page {
    /// Path from the root, with `/`.
    pub path: String,
    /// Its text.
    pub text: String,
}

fn violation(rule: &'static str, message: String) -> Violation {
    Violation { rule, message }
}

/// The text outside fenced code blocks and inline code spans.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        // Inline code: drop what is between backticks.
        let mut inside = false;
        for c in line.chars() {
            if c == '`' {
                inside = !inside;
            } else if !inside {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// The targets of the inline links `[text](target)` of `text`.
pub fn link_targets(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut targets = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                let target = after[..end].trim();
                // `[text](target "title")`
                let target = target.split_whitespace().next().unwrap_or_default();
                targets.push(target.to_string());
                rest = &after[end..];
            }
            None => break,
        }
    }
    targets
}

/// The anchors of `text`'s headings, as GitHub and mdBook make them:
/// lowercase, spaces as hyphens, other punctuation but `-` and `_` left out.
pub fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut found = BTreeSet::new();
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        // A repeated heading gets `-1`, `-2`, ... as mdBook and GitHub do.
        let n = seen.entry(slug.clone()).or_default();
        found.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    found
}

/// `target` (relative to the page at `from`) as a path from the root, or
/// `None` if it leaves the repository.
fn resolve(from: &str, target: &str) -> Option<String> {
    let base = Path::new(from).parent().unwrap_or(Path::new(""));
    let mut parts: Vec<String> = Vec::new();
    for c in base.join(target).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// Every link of `pages` to a file of the repository reaches one of
/// `files` (or a folder holding some), and, with `#anchor`, a heading of
/// that page. Links to other sites are not followed.
pub fn links(pages: &[Page], files: &BTreeSet<String>) -> Vec<Violation> {
    let mut found = Vec::new();
    for page in pages {
        for target in link_targets(&page.text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                Some(page.path.clone())
            } else {
                resolve(&page.path, file.trim_end_matches('/'))
            };
            let Some(path) = path else {
                found.push(violation(
                    "links",
                    format!("{}: the link {target} leaves the repository", page.path),
                ));
                continue;
            };
            let folder = format!("{path}/");
            let exists = files.contains(&path) || files.iter().any(|f| f.starts_with(&folder));
            if !exists {
                found.push(violation(
                    "links",
                    format!("{}: the link {target} reaches no file ({path})", page.path),
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                let Some(linked) = pages.iter().find(|p| p.path == path) else {
                    found.push(violation(
                        "links",
                        format!(
                            "{}: the link {target} names a heading of a page that is not Markdown",
                            page.path
                        ),
                    ));
                    continue;
                };
                if !anchors(&linked.text).contains(anchor) {
                    found.push(violation(
                        "links",
                        format!(
                            "{}: the link {target} names no heading of {path}",
                            page.path
                        ),
                    ));
                }
            }
        }
    }
    found
}

/// `summary` (the text of `docs/SUMMARY.md`) lists every chapter among
/// `chapters` (paths from the root, such as `docs/sandbox.md`) and no
/// page that is not one.
pub fn summary(summary: &str, chapters: &[String]) -> Vec<Violation> {
    let listed: BTreeSet<String> = link_targets(summary)
        .into_iter()
        .map(|t| format!("docs/{t}"))
        .collect();
    let mut found = Vec::new();
    for chapter in chapters {
        if chapter != "docs/SUMMARY.md" && !listed.contains(chapter) {
            found.push(violation(
                "summary",
                format!("{chapter} is not in docs/SUMMARY.md (add it to the table of contents)"),
            ));
        }
    }
    for page in &listed {
        if !chapters.contains(page) {
            found.push(violation(
                "summary",
                format!("docs/SUMMARY.md lists {page}, which does not exist"),
            ));
        }
    }
    found
}

/// The Markdown pages among `files`: the README and the manual.
pub fn pages(root: &Path, files: &[String]) -> std::io::Result<Vec<Page>> {
    files
        .iter()
        .filter(|f| f.ends_with(".md"))
        .map(|f| {
            let text = std::fs::read_to_string(PathBuf::from(root).join(f))?;
            Ok(Page {
                path: f.clone(),
                text,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(path: &str, text: &str) -> Page {
        Page {
            path: path.into(),
            text: text.into(),
        }
    }

    fn files(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn headings_become_anchors_as_mdbook_makes_them() {
        let a = anchors(
            "# Why demo.wasm is 62 KiB\n## Test device logic without Rust: `host test`\n```\n# not a heading\n```\n",
        );
        assert!(a.contains("why-demowasm-is-62-kib"), "{a:?}");
        assert!(
            a.contains("test-device-logic-without-rust-host-test"),
            "{a:?}"
        );
        assert!(!a.contains("not-a-heading"));
        let twice = anchors("## Usage\n## Usage\n");
        assert!(
            twice.contains("usage") && twice.contains("usage-1"),
            "{twice:?}"
        );
    }

    #[test]
    fn links_in_code_are_not_links() {
        let t = link_targets("[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n[d](../w/ \"title\")");
        assert_eq!(t, ["x.md", "../w/"]);
    }

    #[test]
    fn good_links_pass() {
        let pages = [
            page(
                "README.md",
                "[s](docs/sandbox.md#limits) [w](wit/) [top](#top)\n# Top\n",
            ),
            page(
                "docs/sandbox.md",
                "## Limits\n[back](../README.md) [g](../guest/src/lib.rs)",
            ),
        ];
        let files = files(&[
            "README.md",
            "docs/sandbox.md",
            "wit/world.wit",
            "guest/src/lib.rs",
        ]);
        assert_eq!(links(&pages, &files), []);
    }

    #[test]
    fn a_link_to_a_missing_file_fails() {
        let pages = [page("docs/a.md", "[x](b.md)")];
        let found = links(&pages, &files(&["docs/a.md"]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("reaches no file (docs/b.md)"));
    }

    #[test]
    fn a_link_to_a_missing_heading_fails() {
        let pages = [
            page("docs/a.md", "[x](b.md#nope)"),
            page("docs/b.md", "## Yes\n"),
        ];
        let found = links(&pages, &files(&["docs/a.md", "docs/b.md"]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("names no heading of docs/b.md"));
    }

    #[test]
    fn a_chapter_missing_from_the_summary_or_a_listed_page_missing_fails() {
        let chapters = ["docs/SUMMARY.md", "docs/a.md", "docs/b.md"].map(String::from);
        let found = summary("# Summary\n- [A](a.md)\n- [C](c.md)\n", &chapters);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0]
                .message
                .starts_with("docs/b.md is not in docs/SUMMARY.md")
        );
        assert!(
            found[1]
                .message
                .contains("lists docs/c.md, which does not exist")
        );
    }
}
