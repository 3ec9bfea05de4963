use std::time::{Duration, Instant};

use crate::harness::{Azure, STANDARD};

/// Runs kvrun for `vars` (VAR -> secret in vault demo) with a child that would leave a
/// marker, and checks the run failed closed: 125, no child, no value in the output.
fn fails_closed(azure: &Azure, extra: &[&str], vars: &[(&str, &str)]) -> crate::harness::Outcome {
    let marker = azure.dir.path().join("child-started");
    let mut run = azure.kvrun().args(extra.iter().copied());
    for (var, secret) in vars {
        run = run.args(["-s", &format!("{var}={}", azure.reference("demo", secret))]);
    }
    let outcome = run.child_touches(&marker).run();
    outcome
        .code(125)
        .never_shows("s3cr3t-db")
        .never_shows("k3y-api")
        .never_shows("never-seen");
    assert!(!marker.exists(), "a child started with a partial set");
    outcome
}

#[test]
fn all_failing_secrets_are_reported_together_each_naming_var_vault_and_secret() {
    let azure = Azure::start(STANDARD);
    let vault = azure.vault("demo");
    let outcome = fails_closed(
        &azure,
        &[],
        &[
            ("GOOD", "db-password"),
            ("MISSING", "no-such-secret"),
            ("OFF", "disabled-one"),
        ],
    );
    outcome
        .stderr_has(&format!(
            "MISSING: vault {vault}, secret no-such-secret: HTTP 404 SecretNotFound"
        ))
        .stderr_has("has no secret 'no-such-secret'")
        .stderr_has(&format!(
            "OFF: vault {vault}, secret disabled-one: HTTP 403 Forbidden/SecretDisabled"
        ))
        .stderr_has("the secret is disabled")
        .stderr_lacks("GOOD");
}

#[test]
fn rbac_denial_names_the_identity_and_the_role_to_grant() {
    let azure = Azure::start(STANDARD);
    let outcome = fails_closed(
        &azure,
        &["--client-id", "11111111-1111-4111-8111-111111111111"],
        &[("DB", "db-password")],
    );
    outcome
        .stderr_has("DB: vault")
        .stderr_has("HTTP 403 Forbidden/ForbiddenByRbac")
        .stderr_has("Key Vault Secrets User")
        .stderr_has("22222222-2222-4222-8222-222222222222")
        .stderr_has("11111111-1111-4111-8111-111111111111");
}

#[test]
fn access_policy_denial_gives_the_set_policy_hint() {
    let azure = Azure::start(&STANDARD.replace(
        "name = \"demo\"\n",
        "name = \"demo\"\nauthorization = \"access-policy\"\n",
    ));
    fails_closed(
        &azure,
        &["--object-id", "22222222-2222-4222-8222-222222222222"],
        &[("DB", "db-password")],
    )
    .stderr_has("HTTP 403 Forbidden/AccessDenied")
    .stderr_has("az keyvault set-policy")
    .stderr_has("--object-id 22222222-2222-4222-8222-222222222222");
}

#[test]
fn unknown_user_assigned_identity_fails_with_an_imds_hint() {
    let azure = Azure::start(STANDARD);
    fails_closed(
        &azure,
        &["--client-id", "99999999-9999-4999-8999-999999999999"],
        &[("DB", "db-password")],
    )
    .stderr_has("no access token from IMDS managed identity")
    .stderr_has("Identity not found")
    .stderr_has("needed for DB")
    .stderr_has("99999999-9999-4999-8999-999999999999");
}

#[test]
fn optional_entries_tolerate_absent_and_disabled_but_not_denied() {
    let azure = Azure::start(STANDARD);
    let vault = azure.vault("demo");
    azure.dir.write(
        "kvrun.toml",
        format!("vault = \"{vault}\"\n[env]\nA = {{ secret = \"no-such\", optional = true }}\nB = {{ secret = \"disabled-one\", optional = true }}\nC = \"db-password\"\n"),
    );
    azure
        .kvrun()
        .child_prints(&["A", "B", "C"])
        .run()
        .success()
        .stdout("A unset|B unset|C=s3cr3t-db|")
        .stderr_has("A: optional secret no-such");
    // Denied is not "absent": an optional entry still fails the run.
    azure.dir.write(
        "kvrun.toml",
        format!(
            "vault = \"{vault}\"\n[env]\nA = {{ secret = \"db-password\", optional = true }}\n"
        ),
    );
    azure
        .kvrun()
        .args(["--client-id", "11111111-1111-4111-8111-111111111111"])
        .command(["true"])
        .run()
        .code(125)
        .stderr_has("ForbiddenByRbac");
}

#[test]
fn transient_key_vault_failures_are_retried() {
    let azure = Azure::start(&format!(
        "{STANDARD}
[[fault]]
endpoint = \"vault:demo\"
path = \"/secrets/db-password\"
first = 1
status = 429
retry_after = \"1\"
[[fault]]
endpoint = \"vault:demo\"
path = \"/secrets/api-key\"
first = 2
status = 503
"
    ));
    let started = Instant::now();
    azure
        .kvrun()
        .args([
            "-s",
            &format!("A={}", azure.reference("demo", "db-password")),
            "-s",
            &format!("B={}", azure.reference("demo", "api-key")),
        ])
        .child_prints(&["A", "B"])
        .run()
        .success()
        .stdout("A=s3cr3t-db|B=k3y-api|");
    // Retry-After: 1 was honoured (no timing assertion beyond the floor it sets).
    assert!(started.elapsed() >= Duration::from_secs(1));
    let statuses: Vec<u16> = azure
        .requests_to("vault:demo")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
}

#[test]
fn transient_identity_failures_are_retried() {
    let azure = Azure::start(&format!(
        "{STANDARD}\n[[fault]]\nendpoint = \"imds\"\nfirst = 2\nstatus = 410\n"
    ));
    azure
        .kvrun()
        .args([
            "-s",
            &format!("A={}", azure.reference("demo", "db-password")),
        ])
        .child_prints(&["A"])
        .run()
        .success()
        .stdout("A=s3cr3t-db|");
    let statuses: Vec<u16> = azure.requests_to("imds").iter().map(|r| r.status).collect();
    assert_eq!(statuses, [410, 410, 200]);
}

#[test]
fn a_challenge_naming_another_host_is_refused_and_no_token_is_sent() {
    let azure = Azure::start(&format!(
        "{STANDARD}\n[[fault]]\nendpoint = \"vault:demo\"\naction = \"challenge-resource\"\nresource = \"https://management.azure.com\"\n"
    ));
    fails_closed(&azure, &[], &[("DB", "db-password")])
        .stderr_has("https://management.azure.com")
        .stderr_has("not an https origin of its own host or a parent domain")
        .stderr_has("no token was sent");
    assert!(
        azure.requests().iter().all(|r| r.auth.is_none()),
        "a token was sent"
    );
    assert!(
        azure.requests_to("imds").is_empty(),
        "no token should even have been requested"
    );
}

#[test]
fn redirects_are_not_followed() {
    for status in [301, 302, 307] {
        let azure = Azure::start(&format!(
            "{STANDARD}\n[[vault]]\nname = \"elsewhere\"\n[[fault]]\nendpoint = \"vault:demo\"\npath = \"/secrets/db-password\"\naction = \"redirect\"\nstatus = {status}\nlocation = \"https://127.0.0.1:1/stolen\"\n"
        ));
        fails_closed(&azure, &[], &[("DB", "db-password")])
            .stderr_has(&format!("HTTP {status}"))
            .stderr_has("does not follow redirects");
        let redirected: Vec<_> = azure
            .requests_to("vault:demo")
            .into_iter()
            .filter(|r| r.status == status)
            .collect();
        assert_eq!(redirected.len(), 1);
        assert!(azure.requests_to("vault:elsewhere").is_empty());
    }
}

#[test]
fn an_untrusted_certificate_is_refused_before_any_token_is_sent() {
    let azure = Azure::start(STANDARD);
    // Another emulator's CA: a real trust store, just not one that signed this vault.
    let stranger = Azure::start(STANDARD);
    let outcome = azure
        .kvrun()
        .env("SSL_CERT_FILE", stranger.emulator.ca_pem_path())
        .args([
            "-s",
            &format!("DB={}", azure.reference("demo", "db-password")),
        ])
        .command(["true"])
        .run();
    outcome
        .code(125)
        .stderr_has("DB: vault")
        .stderr_has("certificate")
        .stderr_has("TLS refused, nothing was sent")
        .stderr_has("SSL_CERT_FILE")
        // Permanent: asking again gets the same certificate.
        .stderr_lacks("attempts");
    assert!(azure.requests().iter().all(|r| r.auth.is_none()));
    assert!(azure.requests_to("imds").is_empty());
}

#[test]
fn an_empty_trust_store_is_a_clear_setup_error() {
    let azure = Azure::start(STANDARD);
    azure
        .kvrun()
        .env("SSL_CERT_FILE", "/dev/null")
        .args([
            "-s",
            &format!("DB={}", azure.reference("demo", "db-password")),
        ])
        .command(["true"])
        .run()
        .code(125)
        .stderr_has("No CA certificates")
        .stderr_has("SSL_CERT_FILE");
}

#[test]
fn plain_http_vaults_are_refused() {
    let azure = Azure::start(STANDARD);
    let http = azure.vault("demo").replace("https://", "http://");
    azure
        .kvrun()
        .args(["-s", &format!("DB={http}/secrets/db-password")])
        .command(["true"])
        .run()
        .code(125)
        .stderr_has("uses http://");
    azure
        .kvrun()
        .args(["--vault", &http, "-s", "DB=db-password"])
        .command(["true"])
        .run()
        .code(125)
        .stderr_has("uses http://");
    assert!(azure.requests().is_empty());
}

#[test]
fn the_deadline_bounds_a_hanging_vault() {
    let azure = Azure::start(&format!(
        "{STANDARD}\n[[fault]]\nendpoint = \"vault:demo\"\npath = \"/secrets/db-password\"\naction = \"hang\"\n"
    ));
    let started = Instant::now();
    fails_closed(&azure, &["--timeout", "1"], &[("DB", "db-password")])
        .stderr_has("DB: vault")
        .stderr_has("deadline");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_refused_identity_endpoint_fails_fast() {
    let azure = Azure::start(STANDARD);
    let started = Instant::now();
    azure
        .kvrun()
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:1")
        .args([
            "-s",
            &format!("DB={}", azure.reference("demo", "db-password")),
        ])
        .command(["true"])
        .run()
        .code(125)
        .stderr_has("no access token from IMDS")
        .stderr_has("needed for DB");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn hints_do_not_invent_az_vault_names_for_foreign_hosts() {
    let azure = Azure::start(STANDARD);
    fails_closed(&azure, &[], &[("GONE", "no-such")])
        .stderr_has("--vault-name <vault name>")
        .stderr_lacks("--vault-name 127");
}
