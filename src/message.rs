//! Building the lines users read: warnings are single lines of at most [`WARNING_LIMIT`] characters,
//! without control characters, and long lists are cut ("… in 37 namespaces: a, b, c and 34 more").
//! Callers only ever pass names here, never secret data. Shared by the webhook's rules and the
//! reconciler's Events, so it sits below both.

/// The longest warning the apiserver shows unshortened (and the limit docs/SPEC.md §2 sets).
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
    list_line_of(head, items, items.len(), limit)
}

/// [`list_line`] of a list of `total` items of which only the first are at hand (at least as many
/// as `limit` could show: each takes a character).
pub fn list_line_of<S: AsRef<str>>(head: &str, first: &[S], total: usize, limit: usize) -> String {
    // One pass over the items (a project can have thousands of namespaces): the length of the line
    // showing the first `shown` items, for every `shown`; keep the longest that fits.
    let prefix = head.chars().count() + 2;
    let mut joined = 0;
    let mut best = None;
    for (index, item) in first.iter().enumerate() {
        let shown = index + 1;
        joined += item.as_ref().chars().count() + if index > 0 { 2 } else { 0 };
        let rest = total.saturating_sub(shown);
        let suffix = if rest > 0 {
            format!(" and {rest} more").len()
        } else {
            0
        };
        if prefix + joined + suffix <= limit {
            best = Some(shown);
        }
    }
    let Some(shown) = best else {
        return fit(head, limit);
    };
    let mut line = format!("{head}: {}", join(&first[..shown]));
    let rest = total.saturating_sub(shown);
    if rest > 0 {
        line.push_str(&format!(" and {rest} more"));
    }
    one_line(&line)
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

/// An audit-mode denial as warning lines: `would deny: <message>` when it fits one line; otherwise
/// the message is split at its last `; ` (the rules put what to do last) into `would deny: <what>`
/// and `would deny: …; <what to do>`, each cut to [`WARNING_LIMIT`], so the fix is never cut away.
pub fn would_deny(message: &str) -> Vec<String> {
    let whole = format!("would deny: {message}");
    if whole.chars().count() <= WARNING_LIMIT {
        return vec![warning(&whole)];
    }
    match message.rsplit_once("; ") {
        Some((what, fix)) => vec![
            warning(&format!("would deny: {what}")),
            warning(&format!("would deny: …; {fix}")),
        ],
        None => vec![warning(&whole)],
    }
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
    fn a_list_of_ten_thousand_names_is_cut_to_the_limit() {
        let names: Vec<String> = (0..10_000).map(|i| format!("team-{i}")).collect();
        let line = list_line("in 10000 namespaces", &names, WARNING_LIMIT);
        assert!(line.chars().count() <= WARNING_LIMIT, "{line}");
        assert!(
            line.starts_with("in 10000 namespaces: team-0, team-1"),
            "{line}"
        );
        assert!(line.ends_with(" more"), "{line}");
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
    fn audit_lines_keep_what_to_do() {
        assert_eq!(would_deny("short; fix it"), ["would deny: short; fix it"]);
        let long = format!("{}; set it to p-vwxyz", "x".repeat(150));
        let lines = would_deny(&long);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.chars().count() <= WARNING_LIMIT));
        assert_eq!(lines[1], "would deny: …; set it to p-vwxyz");
        assert_eq!(would_deny(&"y".repeat(300)).len(), 1);
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1, "copy", "copies"), "1 copy");
        assert_eq!(count(3, "copy", "copies"), "3 copies");
    }
}
