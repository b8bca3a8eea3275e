//! S6: what can be project-scoped.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use testbed::prelude::*;

#[test]
fn s6_a_service_account_token_original_is_denied() {
    let project = project("s6t");
    let yaml = secret_yaml(
        &project.backing,
        "token",
        &scoped_label(&project.name),
        "  annotations: {kubernetes.io/service-account.name: default}
type: kubernetes.io/service-account-token
",
    );
    let err = fails(kubectl_apply(&yaml, &[]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "secret \"token\" in namespace \"{}\" is of type kubernetes.io/service-account-token, \
             which cannot be project-scoped; remove label {}",
            project.backing,
            keys::PROJECT_SCOPED_LABEL
        ),
    );
}

/// What the ignore list's own parser says of `pattern`.
fn parse_error(pattern: &str) -> String {
    scoped_secrets::plan::IgnoreList::parse(pattern)
        .expect_err("an invalid pattern")
        .to_string()
}

/// The guard denied an ignore annotation, quoting the parser's error.
#[track_caller]
fn assert_denied_for_the_pattern(err: &str, parse_error: &str) {
    let message = format!(
        "annotation {}: {parse_error}",
        keys::IGNORE_NAMESPACES_ANNOTATION
    );
    assert_denied(err, GUARD, &message);
}

#[test]
fn s6_an_invalid_ignore_pattern_is_denied_with_the_parse_error() {
    let pattern = "team-(a";
    let parse_error = parse_error(pattern);
    assert!(parse_error.contains("team-(a"), "{parse_error}");
    assert_denied_for_the_pattern(&create_ignoring("s6i", pattern), &parse_error);
}

/// Creates an original whose ignore list is `yaml_value` (a double-quoted YAML string); the error.
fn create_ignoring(prefix: &str, yaml_value: &str) -> String {
    let yaml = original_yaml(
        &project(prefix),
        "ignoring",
        &format!(
            "  annotations: {{{}: \"{yaml_value}\"}}\n",
            keys::IGNORE_NAMESPACES_ANNOTATION
        ),
    );
    fails(kubectl_apply(&yaml, &[]))
}

#[test]
fn s6_an_invalid_ignore_pattern_added_to_an_existing_original_is_denied() {
    let project = project("s6u");
    original(&project, "cfg");
    let pattern = "[unclosed";
    let parse_error = parse_error(pattern);
    let err = fails(kubectl_line(&format!(
        "annotate secret cfg -n {} {}={pattern}",
        project.backing,
        keys::IGNORE_NAMESPACES_ANNOTATION
    )));
    assert_denied_for_the_pattern(&err, &parse_error);
}

#[test]
fn s6_an_ignore_list_too_long_to_read_is_denied() {
    // A thousand patterns fit in the annotation; their text is refused by its length, before any
    // of them is read (250 KB of patterns took the compiler 40-100 ms per review).
    let pattern = vec![r"\w{50}"; scoped_secrets::plan::ignore::MAX_ENTRIES].join(",");
    let parse_error = parse_error(&pattern);
    let allowed = scoped_secrets::plan::ignore::MAX_PATTERN_BYTES;
    assert!(
        parse_error.contains(&format!("more than the {allowed} allowed")),
        "{parse_error}"
    );
    let err = create_ignoring("s6l", &pattern.replace('\\', r"\\"));
    assert_denied_for_the_pattern(&err, &parse_error);
}

#[test]
fn s6_an_ignore_list_too_costly_to_compile_is_denied() {
    // Within the text allowed, counted repetitions that compiled together pass the limit.
    let pattern = (0..100)
        .map(|i| format!("[a-z0-9-]{{60}}{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let parse_error = parse_error(&pattern);
    assert!(parse_error.contains("too complex"), "{parse_error}");
    let err = create_ignoring("s6c", &pattern);
    assert_denied_for_the_pattern(&err, &parse_error);
}

#[test]
fn s6_an_original_whose_copies_would_carry_more_annotations_than_the_webhook_reads_is_denied() {
    // A copy carries the original's annotations plus five of its own (four markers, and
    // `replaced` when it overwrites). Past the webhook's limit a copy's reviews could not be
    // decoded: its deletes would be refused and its namespace never finish terminating.
    let project = project("s6n");
    let markers = keys::COPY_MARKERS.len() + 1;
    let original = |own: usize| {
        let annotations: serde_json::Map<String, serde_json::Value> = (0..own)
            .map(|i| (format!("a{i}"), serde_json::Value::from("")))
            .collect();
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "crowded",
                "namespace": project.backing,
                "labels": {keys::PROJECT_SCOPED_LABEL: project.name},
                "annotations": annotations,
            },
            "stringData": {"key": "value"},
        })
        .to_string()
    };
    let create = |own: usize| {
        kubectl_stdin(
            &env().kubeconfig,
            &["create", "--dry-run=server", "-f", "-"],
            &original(own),
        )
    };
    ok(create(keys::MAX_METADATA_ENTRIES - markers));
    let err = fails(create(keys::MAX_METADATA_ENTRIES - markers + 1));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "secret \"crowded\" in namespace \"{}\" cannot be project-scoped: its copies would \
             carry {} annotations (its own plus those every copy adds), more than the {} this webhook \
             reads of an object; remove at least 1 entry",
            project.backing,
            keys::MAX_METADATA_ENTRIES + 1,
            keys::MAX_METADATA_ENTRIES
        ),
    );
}

#[test]
fn s6_an_original_with_a_key_of_no_value_is_admitted_like_any_other() {
    // `empty:` with no value is a valid key: the apiserver sends it to webhooks as `null` and
    // stores `""`. A webhook that wanted a string refused such secrets everywhere.
    let project = project("s6n");
    let yaml = secret_yaml(
        &project.backing,
        "nullish",
        &scoped_label("\"\""),
        "data: {key: ZG9n, empty: }\n",
    );
    // `create`, not `apply`: apply reads a key with no value as one to remove.
    let create = |extra: &[&str]| {
        let mut args = vec!["create", "-f", "-"];
        args.extend_from_slice(extra);
        kubectl_stdin(&env().kubeconfig, &args, &yaml)
    };
    ok(create(&["--dry-run=server"]));
    ok(create(&[]));
    let stored = ok(kubectl_line(&format!(
        "get secret nullish -n {} -o jsonpath={{.data}}",
        project.backing
    )));
    assert!(stored.contains(r#""empty":"""#), "{stored}");
    // The mutator (M2) reviewed it too: it filled in the empty project label.
    let label = ok(kubectl_line(&format!(
        "get secret nullish -n {} -o jsonpath={{.metadata.labels.management\\.cattle\\.io/project-scoped-secret}}",
        project.backing
    )));
    assert_eq!(label.trim(), project.name);
}

#[test]
fn s6_an_original_whose_list_cannot_be_read_can_still_be_updated_with_a_warning() {
    // Written past the webhook (as under an earlier version's looser limits): an update that
    // leaves the list as it was is admitted, with a warning that its copies are held back, so its
    // other writers (a certificate's renewal) are not locked out; one that writes it is refused.
    let project = project("s6k");
    let metadata = format!(
        "  annotations: {{{}: \"team-(\"}}\n",
        keys::IGNORE_NAMESPACES_ANNOTATION
    );
    create_as_reconciler(&original_yaml(&project, "kept", &metadata));
    let out = kubectl(&[
        "annotate",
        "secret",
        "kept",
        "-n",
        &project.backing,
        "renewed=now",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warning = "Warning: the ignore-namespaces list cannot be read, so no copy of this secret is written, updated or removed";
    assert!(stderr(&out).contains(warning), "{}", stderr(&out));
    let rewritten = fails(kubectl_line(&format!(
        "annotate secret kept -n {} --overwrite {}=team-[",
        project.backing,
        keys::IGNORE_NAMESPACES_ANNOTATION
    )));
    assert_denied_for_the_pattern(&rewritten, &parse_error("team-["));
}

/// S8, at the limit as shipped (16 MiB): sixteen originals of 999,999 bytes fit in one project, a
/// seventeenth is refused with the sizes (never the data); past the limit (written by an identity
/// the webhook skips), the project's originals can still be changed without growing, shrunk and
/// deleted, but not grown.
#[test]
fn s8_a_projects_originals_take_at_most_16_mib_together() {
    let project = project("s8");
    // 999,999 zero bytes: base64 without padding.
    let blob = "A".repeat(999_999 / 3 * 4);
    let create = |name: &str, extra: &[&str]| {
        let yaml = secret_yaml(
            &project.backing,
            name,
            &scoped_label(&project.name),
            &format!("data: {{blob: {blob}}}\n"),
        );
        // `create`, not `apply`: apply would copy the megabyte into an annotation.
        let mut args = vec!["create", "-f", "-"];
        args.extend_from_slice(extra);
        kubectl_stdin(&env().kubeconfig, &args, &yaml)
    };
    let names = |n: usize| (0..n).map(|i| format!("big-{i}")).collect::<Vec<_>>();
    for name in names(16) {
        ok(create(&name, &[]));
    }
    // What the index holds of each: the data, its key and the two labels (the mutator adds the
    // cluster label), each entry at 96 bytes besides.
    let held = |names: &[String]| {
        let world = env().index.read();
        names
            .iter()
            .map(|name| {
                world
                    .original_at(&project.backing, name)
                    .map_or(0, |o| scoped_secrets::scoped::held_bytes(o.secret))
            })
            .sum::<u64>()
    };
    indexed("sixteen originals", |w| {
        names(16)
            .iter()
            .all(|name| w.original_at(&project.backing, name).is_some())
    });
    let one = held(&names(1));
    assert!(one > 999_999, "{one}");
    let err = fails(create("big-16", &[]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "secret \"big-16\" in namespace \"{}\" cannot be project-scoped: the originals of \
             project local:{} would take {} bytes together (this one {one}: data and metadata, 96 \
             bytes an entry besides), more than the 16777216 bytes --max-project-original-bytes \
             allows (every original is held whole in the webhook's memory); make it smaller or \
             remove another original of the project",
            project.backing,
            project.name,
            held(&names(16)) + one
        ),
    );
    assert!(
        !err.contains(&blob[..64]),
        "the data is never quoted: {err}"
    );
    // Past the limit, written by the reconciler's identity, which the webhook does not review.
    ok(create("big-16", &AS_RECONCILER));
    indexed("seventeen originals", |w| {
        w.original_at(&project.backing, "big-16").is_some()
    });
    let backing = &project.backing;
    // Not growing: the same label value again, with the data as it was.
    ok(kubectl_line(&format!(
        "label secret big-0 -n {backing} {}={} --overwrite",
        scoped_secrets::keys::PROJECT_SCOPED_LABEL,
        project.name
    )));
    // Growing, even by an annotation: refused while the project is past the limit.
    let grown = fails(kubectl_line(&format!(
        "annotate secret big-0 -n {backing} note=more"
    )));
    assert_denied(
        &grown,
        GUARD,
        &format!(
            "secret \"big-0\" in namespace \"{backing}\" cannot be project-scoped: the originals \
             of project local:{} would take",
            project.name
        ),
    );
    // Shrunk and deleted.
    ok(kubectl_line(&format!(
        "patch secret big-1 -n {backing} --type=merge -p {{\"data\":{{\"blob\":\"ZG9n\"}}}}"
    )));
    ok(kubectl_line(&format!("delete secret big-2 -n {backing}")));
    indexed("room made", |w| {
        w.original_at(backing, "big-2").is_none()
            && w.original_at(backing, "big-1")
                .is_some_and(|o| o.secret.data.iter().flatten().all(|(_, v)| v.0.len() == 3))
    });
    ok(kubectl_line(&format!(
        "annotate secret big-0 -n {backing} note=more"
    )));
}
