//! What writes cost at the apiserver: an update of an original is one PUT per copy and no read, and
//! a copy whose data is edited behind our back (a cluster-admin passes the webhook) is still seen
//! and repaired, also without a read. Counted by the apiserver itself (`apiserver_request_total`).

use scoped_secrets::keys;
use scoped_secrets::plan::OverwritePolicy;
use scoped_secrets::scoped::{Scoped, data_digest};
use std::collections::BTreeMap;
use testbed::harness::*;
use testbed::prelude::*;

/// The digest of a secret's data given as base64 values (as `kubectl` shows them).
fn digest_of(pairs: &[(&str, &[u8])]) -> scoped_secrets::scoped::Digest {
    let data: BTreeMap<String, k8s_openapi::ByteString> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.to_vec())))
        .collect();
    data_digest(Some(&data))
}

/// Waits until the reconciler's index holds, in every namespace, a copy of `name` with this data.
#[track_caller]
fn indexed_with(running: &Running, namespaces: &[String], name: &str, digest: [u8; 32]) {
    eventually("every copy indexed with the new data", WAIT, || {
        let world = running.index.read();
        namespaces
            .iter()
            .all(|ns| {
                world
                    .scoped(ns, name)
                    .and_then(Scoped::copy)
                    .is_some_and(|c| c.data_digest == digest)
            })
            .then_some(())
    });
}

/// GETs and PUTs of secrets the apiserver has served.
fn reads_and_updates() -> (f64, f64) {
    (
        apiserver_requests("GET", None),
        apiserver_requests("PUT", None),
    )
}

#[test]
fn an_update_costs_one_put_per_copy_and_no_read_and_data_edited_behind_our_back_is_repaired() {
    let _turn = serial();
    let project = project("cost");
    let namespaces: Vec<String> = (0..3)
        .map(|i| namespace_in(&project, &format!("cost-{i}")))
        .collect();
    let running = start(OverwritePolicy::Warn);
    apply_original(&project, "db", "k: dg==", "");
    indexed_with(&running, &namespaces, "db", digest_of(&[("k", b"v")]));

    // What a `kubectl patch` costs by itself (a plain secret, which the reconciler ignores).
    ok(kubectl(&[
        "create",
        "secret",
        "generic",
        "plain",
        "-n",
        &project.backing,
        "--from-literal=a=b",
    ]));
    let patch = |name: &str, data: &str| {
        ok(kubectl(&[
            "patch",
            "secret",
            name,
            "-n",
            &project.backing,
            "--type=merge",
            "-p",
            &format!("{{\"data\": {data}}}"),
        ]));
    };
    let before = reads_and_updates();
    patch("plain", r#"{"a": "Yw=="}"#);
    let after = reads_and_updates();
    let patch_reads = after.0 - before.0;

    // The original's data changes: each copy is replaced once, with the version the index holds.
    let before = reads_and_updates();
    patch("db", r#"{"k": "dzI="}"#);
    indexed_with(&running, &namespaces, "db", digest_of(&[("k", b"w2")]));
    let after = reads_and_updates();
    assert_eq!(after.1 - before.1, 3.0, "one PUT per copy");
    assert_eq!(after.0 - before.0, patch_reads, "no GET of any copy");

    // A cluster-admin edits one copy's data, keeping every marker and annotation: the index sees
    // what the copy holds, not what we wrote, so it is repaired with one PUT and no read.
    let replace = |object: &serde_json::Value| -> String {
        let out = kubectl_stdin(
            &env().sa_kubeconfig,
            &[
                "replace",
                "-f",
                "-",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
            &serde_json::to_string(object).expect("JSON"),
        );
        assert!(out.status.success(), "replace: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = get_secret(&project.backing, "plain").expect("the plain secret");
    let before = reads_and_updates();
    replace(&plain);
    let after = reads_and_updates();
    let replace_reads = after.0 - before.0;

    let target = &namespaces[1];
    let copy = get_secret(target, "db").expect("the copy");
    let mut edited = copy.clone();
    edited["data"] = serde_json::json!({"k": "ZXZpbA=="});
    let before = reads_and_updates();
    let edited_version = replace(&edited);
    eventually("the edited copy repaired in the index", WAIT, || {
        let world = running.index.read();
        let c = world.scoped(target, "db").and_then(Scoped::copy)?;
        (c.resource_version != edited_version && c.data_digest == digest_of(&[("k", b"w2")]))
            .then_some(())
    });
    let after = reads_and_updates();
    assert_eq!(
        after.1 - before.1,
        2.0,
        "the edit's PUT and the repair's PUT"
    );
    assert_eq!(after.0 - before.0, replace_reads, "no GET of the copy");
    let repaired = get_secret(target, "db").expect("the repaired copy");
    assert!(is_copy_of(&repaired, &project.backing, "db"));
    assert_eq!(data(&repaired), serde_json::json!({"k": "dzI="}));
    assert_eq!(
        annotation(&repaired, keys::COPY_ANNOTATION),
        Some(keys::TRUE)
    );
    running.stop();
}
