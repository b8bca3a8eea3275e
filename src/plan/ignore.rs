//! An original's ignore list (`…/project-scoped-secret-ignore-namespaces`): the namespaces it must
//! not be copied into, as names and regular expressions.
//!
//! The list is the user's text, read on the webhook's threads for every review of an original (a
//! forged review, from anyone who can reach the port, included) and by every plan round, so what
//! it may cost is bounded: at most [`MAX_ENTRIES`] entries; entries that are plain names cost a
//! string compare; the patterns, at most [`MAX_PATTERN_BYTES`] of text together, are checked one
//! by one and compiled into one anchored expression of at most [`MAX_COMPILED_BYTES`]. Namespace
//! names are ASCII, so patterns are read and matched as ASCII: a Unicode class (`\w` in Unicode
//! compiles into thousands of states) would cost megabytes and milliseconds for nothing it could
//! match. Text unbounded, a 250 KB list of patterns took the compiler 40–100 ms per read.

use crate::{keys, world};
use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::hir::{Class, Hir, HirKind};

/// The most entries (names and patterns) a list may have.
pub const MAX_ENTRIES: usize = 1024;

/// The most text the list's patterns (its entries that are not plain names) may have together.
/// About a hundred patterns such as `ops-7-[a-z]{2}-.*` fit; names cost nothing and need no room.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// The most the list's patterns, compiled together, may take.
pub const MAX_COMPILED_BYTES: usize = 256 * 1024;

/// The namespaces an original must not be copied into, from its ignore annotation.
#[derive(Debug, Clone, Default)]
pub struct IgnoreList {
    /// Entries that are plain names: as patterns they would match only themselves.
    names: Vec<String>,
    /// The other entries, each anchored, in one expression.
    patterns: Option<Regex>,
    /// The annotation could not be read: every namespace counts as ignored (see [`Self::of`]).
    unreadable: bool,
}

/// An ignore list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnorePatternError {
    #[error("ignore-namespaces entry {entry:?} is not a valid pattern: {reason}")]
    Invalid { entry: String, reason: String },
    #[error(
        "ignore-namespaces has {count} entries, more than the {MAX_ENTRIES} allowed; use patterns \
         that cover several namespaces"
    )]
    TooMany { count: usize },
    #[error(
        "ignore-namespaces patterns add up to {bytes} bytes, more than the {MAX_PATTERN_BYTES} \
         allowed; use fewer patterns, or plain namespace names, which cost nothing and need no room"
    )]
    TooLong { bytes: usize },
    #[error(
        "ignore-namespaces patterns are too complex: together they compile past {MAX_COMPILED_BYTES} \
         bytes (counted repetitions are large: a hundred patterns such as [a-z0-9-]{{60}} pass \
         the limit); use fewer or simpler patterns, or plain namespace names, which cost nothing"
    )]
    TooComplex,
}

impl IgnoreList {
    /// Parses a comma-separated list of namespace names or regular expressions. Every entry is
    /// anchored: `team-.*` matches `team-a`, never `my-team-a` (Rancher's are unanchored, a known bug).
    pub fn parse(value: &str) -> Result<Self, IgnorePatternError> {
        let entries: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries.len() > MAX_ENTRIES {
            return Err(IgnorePatternError::TooMany {
                count: entries.len(),
            });
        }
        let (names, patterns): (Vec<&str>, Vec<&str>) =
            entries.into_iter().partition(|entry| is_plain_name(entry));
        let bytes = patterns.iter().map(|p| p.len()).sum();
        if bytes > MAX_PATTERN_BYTES {
            return Err(IgnorePatternError::TooLong { bytes });
        }
        for entry in &patterns {
            // Each entry must be a pattern on its own: `a)|(b` parses once wrapped in the anchors,
            // and would then match outside them. Parsing checks it without compiling it, read
            // as the whole list is compiled: ASCII.
            let invalid = |reason: String| IgnorePatternError::Invalid {
                entry: (*entry).to_owned(),
                reason,
            };
            let parsed = regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .build()
                .parse(entry)
                .map_err(|e| invalid(last_line(&e.to_string())))?;
            // `(?u)` turns Unicode back on: its classes cost megabytes and match nothing a
            // namespace name holds.
            if beyond_ascii(&parsed) {
                return Err(invalid(
                    "a class of characters beyond ASCII (the u flag), which no namespace name \
                     holds; use ASCII classes such as [a-z0-9-]"
                        .to_owned(),
                ));
            }
        }
        Ok(Self {
            names: names.into_iter().map(str::to_owned).collect(),
            patterns: compiled(&patterns)?,
            unreadable: false,
        })
    }

    /// The ignore list of an original's metadata. One that cannot be read (the webhook refuses it;
    /// it can still arrive past the webhook, or from an older version's looser limits) ignores
    /// every namespace: copying where its author said not to would leak the secret. The plan keeps
    /// the copies that exist and reports why no other is written ([`Self::is_unreadable`]).
    pub fn of(meta: &kube::api::ObjectMeta) -> Self {
        match world::annotation(meta, keys::IGNORE_NAMESPACES_ANNOTATION).map(Self::parse) {
            None => Self::default(),
            Some(Ok(list)) => list,
            Some(Err(_)) => Self {
                unreadable: true,
                ..Self::default()
            },
        }
    }

    /// Whether the annotation could not be read (and so every namespace counts as ignored).
    pub fn is_unreadable(&self) -> bool {
        self.unreadable
    }

    pub fn matches(&self, namespace: &str) -> bool {
        self.unreadable
            || self.names.iter().any(|name| name == namespace)
            || self
                .patterns
                .as_ref()
                .is_some_and(|p| p.is_match(namespace.as_bytes()))
    }
}

/// Whether the pattern has a class of characters beyond ASCII (only the `u` flag makes one).
fn beyond_ascii(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class.ranges().iter().any(|r| r.end() > '\x7f'),
        // Without the flag a class is of bytes: `.` and `[^a]` reach past ASCII only as bytes, which
        // cost a range each.
        HirKind::Class(Class::Bytes(_)) => false,
        HirKind::Repetition(repetition) => beyond_ascii(&repetition.sub),
        HirKind::Capture(capture) => beyond_ascii(&capture.sub),
        HirKind::Concat(parts) | HirKind::Alternation(parts) => parts.iter().any(beyond_ascii),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Look(_) => false,
    }
}

/// An entry that, as a pattern, matches exactly itself: letters, digits, `-` and `_`.
fn is_plain_name(entry: &str) -> bool {
    entry
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The patterns, each a group of its own (its flags end with it), anchored together.
fn compiled(patterns: &[&str]) -> Result<Option<Regex>, IgnorePatternError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let alternatives: Vec<String> = patterns.iter().map(|p| format!("(?:{p})")).collect();
    RegexBuilder::new(&format!("^(?:{})$", alternatives.join("|")))
        .unicode(false)
        .size_limit(MAX_COMPILED_BYTES)
        .build()
        .map(Some)
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => IgnorePatternError::TooComplex,
            other => IgnorePatternError::Invalid {
                entry: patterns.join(","),
                reason: last_line(&other.to_string()),
            },
        })
}

/// The last non-empty line: where the regex crate puts the actual error.
fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(text)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_anchored() {
        let list = IgnoreList::parse("team-.*, legacy").expect("valid");
        assert!(list.matches("team-a"));
        assert!(list.matches("legacy"));
        assert!(!list.matches("my-team-a"));
        assert!(!list.matches("legacy-2"));
        assert!(!IgnoreList::parse("").expect("empty").matches("a"));
    }

    #[test]
    fn an_entry_cannot_escape_its_anchors_or_lend_its_flags() {
        let err = IgnoreList::parse("zzz)|(billing-.*").expect_err("not a pattern on its own");
        assert!(
            matches!(&err, IgnorePatternError::Invalid { entry, .. } if entry == "zzz)|(billing-.*"),
            "{err}"
        );
        let list = IgnoreList::parse("(?i)TEAM-A, OPS-.*").expect("valid");
        assert!(list.matches("team-a"));
        assert!(
            !list.matches("ops-1"),
            "the first entry's flag ends with it"
        );
    }

    #[test]
    fn invalid_ignore_pattern_names_the_entry() {
        match IgnoreList::parse("ok, team-(").expect_err("invalid") {
            IgnorePatternError::Invalid { entry, reason } => {
                assert_eq!(entry, "team-(");
                assert!(!reason.is_empty());
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_list_costs_little_whatever_it_holds() {
        // Thousands of entries that each compile into megabytes: refused by count, at once.
        let many = vec![r"\w{256}"; 30_000].join(",");
        assert_eq!(
            IgnoreList::parse(&many).expect_err("too many"),
            IgnorePatternError::TooMany { count: 30_000 }
        );
        // As many as allowed, patterns of a few hundred bytes each (250 KB of text took the
        // compiler 40-100 ms): refused by their length, before any is read.
        let long = vec![format!("ns-{}.*", "abcdefghij".repeat(24)); MAX_ENTRIES].join(",");
        assert!(matches!(
            IgnoreList::parse(&long).expect_err("too long"),
            IgnorePatternError::TooLong { bytes } if bytes > MAX_PATTERN_BYTES
        ));
        // Within the text allowed, counted repetitions that compile past the limit: refused.
        let heavy: Vec<String> = (0..100).map(|i| format!("[a-z0-9-]{{60}}{i}")).collect();
        assert!(heavy.join(",").len() <= MAX_PATTERN_BYTES);
        assert_eq!(
            IgnoreList::parse(&heavy.join(",")).expect_err("too complex"),
            IgnorePatternError::TooComplex
        );
        // A long list of names and many patterns is fine.
        let mut ordinary: Vec<String> = (0..MAX_ENTRIES - 100)
            .map(|i| format!("team-{i}"))
            .collect();
        ordinary.extend((0..100).map(|i| format!("ops-{i}-[a-z]{{2}}-.*")));
        let list = IgnoreList::parse(&ordinary.join(", ")).expect("valid");
        assert!(list.matches("team-923"));
        assert!(list.matches("ops-99-eu-west"));
        assert!(!list.matches("ops-100-eu-west"));
    }

    #[test]
    fn classes_beyond_ascii_are_refused_with_a_reason() {
        for pattern in [r"(?u:\w{29})", r"(?u)\w", r"\p{L}", "(?u:[é-ü])"] {
            match IgnoreList::parse(pattern) {
                Err(IgnorePatternError::Invalid { entry, reason }) => {
                    assert_eq!(entry, pattern);
                    assert!(!reason.is_empty());
                }
                other => panic!("{pattern}: {other:?}"),
            }
        }
    }

    #[test]
    fn patterns_read_namespace_names_as_ascii() {
        // `\w` is ASCII (a Unicode \w{30} alone compiled past a megabyte); namespaces match as
        // before, being ASCII.
        let list = IgnoreList::parse(r"\w{30}, ops-\d+").expect("valid");
        assert!(list.matches(&"a".repeat(30)));
        assert!(list.matches("ops-42"));
        assert!(!list.matches("ops-x"));
        let list = IgnoreList::parse("x[^a], (?i)Y.z").expect("valid");
        assert!(list.matches("xb") && !list.matches("xa"));
        assert!(list.matches("y-z"));
    }
}
