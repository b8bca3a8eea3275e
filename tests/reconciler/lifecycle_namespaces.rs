//! Namespace lifecycles with a real namespace controller (issue 10): the local control plane runs
//! kube-controller-manager, so a deleted namespace's content is removed and the namespace really
//! disappears, or stays `Terminating` while something in it holds a finalizer. The reconciler runs as
//! the product's service account.
//!
//! A child module of the reconciler tests, to share their helpers and take turns with them.

use super::*;

const HOLD_FINALIZER: &str = "example.com/hold";

fn namespace_exists(ns: &str) -> bool {
    let out = kubectl_line(&format!("get namespace {ns} -o name"));
    if out.status.success() {
        return true;
    }
    let err = stderr(&out);
    assert!(
        err.contains("NotFound"),
        "kubectl get namespace failed: {err}"
    );
    false
}

/// Waits until the namespace is gone, which only a running namespace controller brings about.
#[track_caller]
fn namespace_gone(ns: &str) {
    eventually(&format!("namespace {ns} to disappear"), WAIT, || {
        (!namespace_exists(ns)).then_some(())
    });
}

fn phase(ns: &str) -> String {
    ok(kubectl(&[
        "get",
        "namespace",
        ns,
        "-o",
        "jsonpath={.status.phase}",
    ]))
}

fn resource_version(ns: &str, name: &str) -> String {
    let secret = get_secret(ns, name).unwrap_or_else(|| panic!("secret {ns}/{name} exists"));
    secret["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_owned()
}

/// The originals `db` and `api` of a project.
const DB_AND_API: &[(&str, &str)] = &[("db", "k: ZG9n"), ("api", "k: Y2F0")];

/// Project `<prefix>` with a member namespace `<prefix>-<member>` for each of `members`, a
/// reconciler under the warn policy, and each of `originals` (name, data) applied in turn and
/// copied into every member.
#[track_caller]
fn copied_into_members<const N: usize>(
    prefix: &str,
    members: [&str; N],
    originals: &[(&str, &str)],
) -> (TestProject, [String; N], Running) {
    let project = project(prefix);
    let members = members.map(|member| namespace_in(&project, &format!("{prefix}-{member}")));
    let running = start(OverwritePolicy::Warn);
    for (name, data) in originals {
        apply_original(&project, name, data, "");
        for ns in &members {
            copy_where(ns, &project.backing, name, "the copy", |_| true);
        }
    }
    (project, members, running)
}

#[test]
fn deleting_a_member_namespace_takes_its_copies_and_touches_nothing_else() {
    let _turn = serial();
    let (project, [doomed, b, c], running) =
        copied_into_members("lm", ["doomed", "b", "c"], DB_AND_API);
    let mut untouched = vec![];
    for ns in [&b, &c, &project.backing] {
        for name in ["db", "api"] {
            untouched.push((ns.clone(), name, resource_version(ns, name)));
        }
    }
    let errors = running.errors();

    ok(kubectl_line(&format!(
        "delete namespace {doomed} --wait=false"
    )));
    namespace_gone(&doomed);
    assert_eq!(get_secret(&doomed, "db"), None);
    assert_eq!(get_secret(&doomed, "api"), None);
    for (ns, name, version) in &untouched {
        assert_eq!(
            &resource_version(ns, name),
            version,
            "{ns}/{name} was written while another namespace of its project went away"
        );
    }
    // No error loop: nothing failed, and once the namespace is gone, further rounds requeue nothing.
    running.assert_no_error_loop(errors, &[&b, &c]);
    running.stop();
}

#[test]
fn deleting_a_backing_namespace_removes_its_originals_and_every_copy_of_them() {
    let _turn = serial();
    let (project, members, running) = copied_into_members("lb", ["a", "b"], DB_AND_API);
    let errors = running.errors();
    let namespace_uid = || {
        ok(kubectl(&[
            "get",
            "namespace",
            &project.backing,
            "-o",
            "jsonpath={.metadata.uid}",
            "--ignore-not-found",
        ]))
    };
    let deleted = namespace_uid();

    ok(kubectl_line(&format!(
        "delete namespace {} --wait=false",
        project.backing
    )));
    // Gone, and (the Project still recording it) made again at once, empty and marked for it, so
    // that nobody else can take its name.
    let id = scoped_secrets::keys::ProjectId::new("local", project.name.clone());
    eventually("the backing namespace made again", WAIT, || {
        let world = running.index.read();
        let made_again = world
            .namespace(&project.backing)
            .is_some_and(|ns| !ns.terminating && ns.marked_project().as_ref() == Some(&id));
        (made_again && namespace_uid() != deleted).then_some(())
    });
    for name in ["db", "api"] {
        assert_eq!(get_secret(&project.backing, name), None, "original {name}");
    }
    for ns in &members {
        gone(ns, "db");
        gone(ns, "api");
    }
    running.assert_no_error_loop(errors, &[&members[0], &members[1]]);
    running.stop();
}

#[test]
fn a_namespace_stuck_terminating_is_never_written_into_and_goes_away_once_released() {
    let _turn = serial();
    let (project, [a, b, stuck], running) =
        copied_into_members("lt", ["a", "b", "stuck"], &[("db", "k: ZG9n")]);
    let members = [a, b];
    // Something in the namespace holds it: the namespace controller removes everything else and
    // waits for the finalizer.
    ok(kubectl_apply(
        &format!(
            "apiVersion: v1
kind: ConfigMap
metadata: {{name: hold, namespace: {stuck}, finalizers: [{HOLD_FINALIZER}]}}
"
        ),
        &[],
    ));
    ok(kubectl_line(&format!(
        "delete namespace {stuck} --wait=false"
    )));
    eventually(
        "the reconciler to see the namespace terminating",
        WAIT,
        || {
            running
                .index
                .read()
                .namespace(&stuck)
                .is_some_and(|n| n.terminating)
                .then_some(())
        },
    );
    gone(&stuck, "db");
    running.another_round(&members[0]);
    let (writes, errors) = (running.writes(), running.errors());

    // An original updated and one created while the namespace is terminating.
    apply_original(&project, "db", "k: Y2F0", "");
    apply_original(&project, "api", "k: ZWVs", "");
    for ns in &members {
        copy_where(ns, &project.backing, "db", "the updated copy", |s| {
            s["data"]["k"] == "Y2F0"
        });
        copy_where(ns, &project.backing, "api", "the new copy", |_| true);
    }
    running.another_round(&members[0]);
    assert_eq!(phase(&stuck), "Terminating");
    assert_eq!(get_secret(&stuck, "db"), None);
    assert_eq!(get_secret(&stuck, "api"), None);
    // Exactly the members' two updates and two creates, and no failed attempt on the stuck one.
    assert_eq!(running.writes() - writes, 4.0, "writes beyond the members'");
    assert_eq!(running.errors(), errors, "the reconciler's actions failed");

    // Released, the namespace goes away cleanly.
    ok(kubectl_line(&format!(
        "patch configmap hold -n {stuck} --type=json -p {}",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#
    )));
    namespace_gone(&stuck);
    running.assert_no_error_loop(errors, &[&members[1]]);
    running.stop();
}
