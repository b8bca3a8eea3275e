//! Building the lines users read: warnings are single lines of at most [`WARNING_LIMIT`] characters,
//! without control characters, and long lists are cut ("… in 37 namespaces: a, b, c and 34 more").
//! Callers only ever pass names here, never secret data.

/// The longest warning the apiserver shows unshortened (and the limit SPEC §2 sets).
pub const WARNING_LIMIT: usize = 120;

/// Replaces control characters (newlines included) with spaces, so a line stays a line.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` as one line of at most `limit` characters, ending in `…` when it had to be cut.
pub fn fit(text: &str, limit: usize) -> String {
    let line = one_line(text);
    if line.chars().count() <= limit {
        return line;
    }
    let mut cut: String = line.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `"{head}: a, b, c and 34 more"`, showing as many items as fit in `limit` characters (at least the
/// count of the rest), and cut with [`fit`] if even the head is too long.
pub fn list_line<S: AsRef<str>>(head: &str, items: &[S], limit: usize) -> String {
    for shown in (1..=items.len()).rev() {
        let mut line = format!("{head}: ");
        line.push_str(&join(&items[..shown]));
        let rest = items.len() - shown;
        if rest > 0 {
            line.push_str(&format!(" and {rest} more"));
        }
        let line = one_line(&line);
        if line.chars().count() <= limit {
            return line;
        }
    }
    fit(head, limit)
}

fn join<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A warning line listing items: see [`list_line`].
pub fn warning_list<S: AsRef<str>>(head: &str, items: &[S]) -> String {
    list_line(head, items, WARNING_LIMIT)
}

/// Denials may be longer than a warning (the apiserver shows them whole), but not unbounded.
pub const DENIAL_LIST_LIMIT: usize = 400;

/// A denial message listing items: see [`list_line`].
pub fn denial_list<S: AsRef<str>>(head: &str, items: &[S]) -> String {
    list_line(head, items, DENIAL_LIST_LIMIT)
}

/// A warning line: see [`fit`].
pub fn warning(text: &str) -> String {
    fit(text, WARNING_LIMIT)
}

/// `1 copy`, `3 copies`: the count and the right form of a noun.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {plural}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lists_are_shown_whole() {
        assert_eq!(
            warning_list("overwrites secrets in 2 namespaces", &["a", "b"]),
            "overwrites secrets in 2 namespaces: a, b"
        );
    }

    #[test]
    fn long_lists_are_cut_with_a_count_of_the_rest() {
        let names: Vec<String> = (0..37).map(|i| format!("team-namespace-{i:02}")).collect();
        let line = warning_list("in 37 namespaces", &names);
        assert!(line.chars().count() <= WARNING_LIMIT, "{line}");
        assert!(line.starts_with("in 37 namespaces: team-namespace-00, "));
        let rest: usize = line
            .rsplit(" and ")
            .next()
            .and_then(|t| t.strip_suffix(" more"))
            .and_then(|n| n.parse().ok())
            .expect("ends with a count");
        let shown = line.matches("team-namespace-").count();
        assert_eq!(shown + rest, 37);
    }

    #[test]
    fn nothing_is_ever_longer_than_the_limit() {
        let huge = "x".repeat(500);
        for line in [
            warning(&huge),
            warning_list(&huge, &["a"]),
            warning_list("head", &[huge.as_str()]),
        ] {
            assert!(line.chars().count() <= WARNING_LIMIT);
        }
        assert!(warning(&huge).ends_with('…'));
    }

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(warning("a\nb\tc\u{7}"), "a b c ");
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1, "copy", "copies"), "1 copy");
        assert_eq!(count(3, "copy", "copies"), "3 copies");
    }
}
