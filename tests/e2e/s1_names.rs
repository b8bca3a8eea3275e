//! S1: unique names.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use testbed::prelude::*;

#[test]
fn s1_a_name_taken_by_a_certificate_is_denied_naming_its_type() {
    let ns = plain_namespace("s1-tls");
    let ca = scoped_secrets::certs::Authority::generate("s1-test-ca", 1).expect("a CA");
    let issued = ca
        .issue(&["web.example".to_owned()], &[], 1, false)
        .expect("a certificate");
    let dir = env().state_dir.join(unique("s1-tls"));
    std::fs::create_dir_all(&dir).expect("a directory");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &issued.cert_pem).expect("writing the certificate");
    std::fs::write(&key, &issued.key_pem).expect("writing the key");
    ok(kubectl(&[
        "create",
        "secret",
        "tls",
        "web",
        "-n",
        &ns,
        &format!("--cert={}", cert.display()),
        &format!("--key={}", key.display()),
    ]));
    indexed("the certificate", |w| w.secret_meta(&ns, "web").is_some());

    let expected = format!(
        "a certificate (kubernetes.io/tls) named \"web\" already exists in namespace \"{ns}\"; \
         certificates, registry credentials and secrets share one set of names per namespace"
    );
    let create = |extra: &[&str]| {
        let mut args = vec![
            "create",
            "secret",
            "generic",
            "web",
            "-n",
            &ns,
            "--from-literal=key=value",
        ];
        args.extend_from_slice(extra);
        kubectl(&args)
    };
    for dry_run in [&["--dry-run=server"][..], &[]] {
        let err = fails(create(dry_run));
        assert_eq!(
            err.trim_end(),
            format!(
                "error: failed to create secret admission webhook \"{NAMES}\" denied the \
                 request: {expected}"
            )
        );
    }
    // Answered as the apiserver itself would answer a taken name, which kubectl shows as the
    // reason when it prints the server's error itself.
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: web, namespace: {ns}}}\n\
         stringData: {{key: value}}\n"
    );
    let err = fails(kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-"],
        &yaml,
    ));
    assert_eq!(
        err.trim_end(),
        format!(
            "Error from server (AlreadyExists): error when creating \"STDIN\": admission webhook \
             \"{NAMES}\" denied the request: {expected}"
        )
    );
    // The certificate is untouched.
    let ty = ok(kubectl(&[
        "get",
        "secret",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.type}",
    ]));
    assert_eq!(ty, "kubernetes.io/tls");
}

#[test]
fn s1_a_name_taken_by_a_registry_credential_is_denied_naming_its_type() {
    let ns = plain_namespace("s1-reg");
    ok(kubectl_line(&format!(
        "create secret docker-registry pull -n {ns} --docker-server=registry.example --docker-username=u --docker-password=p"
    )));
    indexed("the registry credential", |w| {
        w.secret_meta(&ns, "pull").is_some()
    });
    let err = fails(kubectl_line(&format!(
        "create secret generic pull -n {ns} --from-literal=key=value"
    )));
    assert_eq!(
        err.trim_end(),
        format!(
            "error: failed to create secret admission webhook \"{NAMES}\" denied the request: a \
             registry credential (kubernetes.io/dockerconfigjson) named \"pull\" already exists in \
             namespace \"{ns}\"; certificates, registry credentials and secrets share one set of \
             names per namespace"
        )
    );
}

#[test]
fn s1_a_name_reserved_by_an_original_is_denied_in_the_project_namespaces() {
    let project = project("s1r");
    let ns = namespace_in(&project, "s1r");
    original(&project, "db");
    let out = kubectl_line(&format!(
        "create secret generic db -n {ns} --from-literal=key=value"
    ));
    let err = fails(out);
    let reserved = format!(
        "secret name \"db\" in namespace \"{ns}\" is reserved by project-scoped secret \"{}\" of \
         project {}",
        origin(&project, "db"),
        project.name
    );
    if reconciler_running() && !err.contains(&reserved) {
        // The copy landed first: the name is then simply taken.
        assert_denied(
            &err,
            NAMES,
            &format!("a secret (Opaque) named \"db\" already exists in namespace \"{ns}\""),
        );
    } else {
        assert_eq!(
            err.trim_end(),
            format!(
                "error: failed to create secret admission webhook \"{NAMES}\" denied the \
                 request: {reserved}"
            )
        );
    }
    // Other names in the project namespace, and the same name outside the project, are free.
    let elsewhere = plain_namespace("s1r-out");
    generic(&elsewhere, "db");
    generic(&ns, "not-reserved");
}

#[test]
fn s1_generate_name_passes_even_where_the_prefix_is_a_taken_name() {
    let ns = plain_namespace("s1g");
    generic(&ns, "app");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata: {{generateName: app, namespace: {ns}}}
stringData: {{key: value}}
"
    );
    let out = ok(kubectl_stdin(
        &env().kubeconfig,
        &["create", "-f", "-", "-o", "name"],
        &yaml,
    ));
    let created = out.trim();
    assert!(
        created.starts_with("secret/app") && created.len() > "secret/app".len(),
        "{out}"
    );
}

#[test]
fn s1_a_secret_the_webhook_cannot_read_is_admitted_with_a_warning_and_can_be_deleted() {
    // The names' entry fails open (its checks are advisory): a secret the decoder refuses (more
    // labels than it reads) is admitted with a warning that says so, as an outage would admit it,
    // and can be deleted, so its namespace can finish terminating. Refused, it was locked out.
    let ns = plain_namespace("s1-unread");
    let labels: String = (0..=scoped_secrets::keys::MAX_METADATA_ENTRIES)
        .map(|i| format!("    l{i}: v\n"))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: crowded\n  namespace: {ns}\n  labels:\n{labels}stringData:\n  key: value\n"
    );
    let warning = "Warning: scoped-secrets could not review this request, so its advisory checks were skipped:";
    let created = kubectl_stdin(&env().kubeconfig, &["create", "-f", "-"], &yaml);
    assert!(created.status.success(), "{}", stderr(&created));
    let said = stderr(&created);
    let warned: Vec<&str> = said.lines().filter(|l| l.starts_with(warning)).collect();
    assert_eq!(warned.len(), 1, "{said}");
    assert!(warned[0].contains("more than 1024 entries"), "{said}");
    let deleted = kubectl(&["delete", "secret", "crowded", "-n", &ns]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(stderr(&deleted).contains(warning), "{}", stderr(&deleted));
    let gone = kubectl(&["get", "secret", "crowded", "-n", &ns]);
    assert!(stderr(&gone).contains("NotFound"), "{}", stderr(&gone));
}
