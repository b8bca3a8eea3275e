//! An original's ignore list (`…/project-scoped-secret-ignore-namespaces`): the namespaces it must
//! not be copied into, as names and regular expressions.
//!
//! The list is the user's text, read on the webhook's threads for every review of an original and
//! by every plan round, so what it may cost is bounded: at most [`MAX_ENTRIES`] entries; entries
//! that are plain names cost a string compare; the patterns are checked one by one and compiled
//! into one anchored expression of at most [`MAX_COMPILED_BYTES`]. A regex engine compiles a
//! counted repetition of a Unicode class (`\w{256}`) into megabytes over tens of milliseconds: a
//! few thousand such entries, unbounded, would take minutes and gigabytes of one review.

use crate::{keys, world};
use regex::{Regex, RegexBuilder};

/// The most entries (names and patterns) a list may have.
pub const MAX_ENTRIES: usize = 1024;

/// The most the list's patterns, compiled together, may take. Five hundred patterns such as
/// `ops-7-[a-z]{2}-.*` fit; reaching the limit takes the compiler about 10 ms.
pub const MAX_COMPILED_BYTES: usize = 1024 * 1024;

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
        "ignore-namespaces patterns are too complex: together they compile past {MAX_COMPILED_BYTES} \
         bytes (a counted repetition of a Unicode class is large: \\w{{30}} alone passes the limit, \
         [a-z0-9-]{{30}} takes kilobytes); use fewer or simpler patterns, or plain namespace names, \
         which cost nothing"
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
        for entry in &patterns {
            // Each entry must be a pattern on its own: `a)|(b` parses once wrapped in the anchors,
            // and would then match outside them. Parsing checks it without compiling it.
            regex_syntax::Parser::new()
                .parse(entry)
                .map_err(|e| IgnorePatternError::Invalid {
                    entry: (*entry).to_owned(),
                    reason: last_line(&e.to_string()),
                })?;
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
                .is_some_and(|p| p.is_match(namespace))
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
    use std::time::Instant;

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
        // As many as allowed, each compiling on its own into megabytes: refused when together they
        // pass the limit, not after compiling each (a minute and gigabytes). Timed only to say so
        // in the failure.
        let started = Instant::now();
        let heavy = vec![r"\w{50}"; MAX_ENTRIES].join(",");
        assert_eq!(
            IgnoreList::parse(&heavy).expect_err("too complex"),
            IgnorePatternError::TooComplex,
            "after {:?}",
            started.elapsed()
        );
        // A long list of names and a few patterns is fine.
        let mut ordinary: Vec<String> =
            (0..MAX_ENTRIES - 64).map(|i| format!("team-{i}")).collect();
        ordinary.extend((0..64).map(|i| format!("ops-{i}-[a-z]{{2}}-.*")));
        let list = IgnoreList::parse(&ordinary.join(", ")).expect("valid");
        assert!(list.matches("team-959"));
        assert!(list.matches("ops-63-eu-west"));
        assert!(!list.matches("ops-64-eu-west"));
    }
}
