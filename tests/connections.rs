//! Connections to the vault: the known-cloud minimum of requests, the connection
//! opened while the token is fetched, HTTP/2 multiplexing.

use crate::harness::Azure;

/// A vault under a known cloud's suffix, with a slow IMDS (so that the order of
/// events shows in the emulator's log).
fn known_cloud(imds_latency_ms: u64) -> Azure {
    Azure::start(&format!(
        r#"
[[vault]]
name = "kvrundemo"
host = "kvrundemo.vault.azure.net"
[[vault.secret]]
name = "one"
value = "v-one"
[[vault.secret]]
name = "two"
value = "v-two"
[[vault.secret]]
name = "three"
value = "v-three"
[[identity]]
name = "system"
kind = "system-assigned"
[[grant]]
identity = "system"
vault = "kvrundemo"
permissions = ["get"]
[imds]
latency_ms = {imds_latency_ms}
"#
    ))
}

/// A vault under a known cloud's suffix takes the physical minimum: one token
/// request, then one authenticated GET per secret, with no challenge round trip.
#[test]
fn known_cloud_vault_needs_one_token_request_and_no_challenge() {
    let azure = known_cloud(0);
    let vault = azure.vault("kvrundemo");
    assert!(
        vault.starts_with("https://kvrundemo.vault.azure.net:"),
        "{vault}"
    );
    let host = vault.trim_start_matches("https://");
    azure
        .kvrun()
        .env("KVRUN_RESOLVE", "kvrundemo.vault.azure.net=127.0.0.1")
        .args(["-s", &format!("ONE=keyvault://{host}/one")])
        .args(["-s", &format!("TWO={vault}/secrets/two")])
        .args([
            "-s",
            &format!("THREE=@Microsoft.KeyVault(SecretUri={vault}/secrets/three/)"),
        ])
        .child_prints(&["ONE", "TWO", "THREE"])
        .run()
        .success()
        .stderr_empty()
        .stdout("ONE=v-one|TWO=v-two|THREE=v-three|");

    let tokens = azure.requests_to("imds");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(
        tokens[0]
            .query
            .contains("resource=https%3A%2F%2Fvault.azure.net"),
        "{}",
        tokens[0].query
    );
    let gets = azure.requests_to("vault:kvrundemo");
    assert_eq!(gets.len(), 3, "{gets:?}");
    for get in &gets {
        assert_eq!(get.status, 200);
        assert_eq!(get.host, host);
        let auth = get
            .auth
            .as_ref()
            .expect("every vault request carries the token");
        assert_eq!(auth.audience.as_deref(), Some("https://vault.azure.net"));
    }
}

/// The vault's TCP, TLS and HTTP/2 handshakes need no token, so kvrun makes them
/// while IMDS is still answering: the vault accepted the connection before the
/// token was sent, and every GET travelled on that one connection.
#[test]
fn vault_connection_is_opened_while_the_token_is_fetched() {
    let azure = known_cloud(300);
    let vault = azure.vault("kvrundemo");
    azure
        .kvrun()
        .env("KVRUN_RESOLVE", "kvrundemo.vault.azure.net=127.0.0.1")
        .arg("--vault")
        .arg(&vault)
        .args(["-s", "ONE=one", "-s", "TWO=two", "-s", "THREE=three"])
        .child_prints(&["ONE", "TWO", "THREE"])
        .run()
        .success()
        .stdout("ONE=v-one|TWO=v-two|THREE=v-three|");
    let token = &azure.requests_to("imds")[0];
    let gets = azure.requests_to("vault:kvrundemo");
    assert_eq!(gets.len(), 3);
    for get in &gets {
        assert_eq!(
            get.connection, gets[0].connection,
            "one connection for every GET"
        );
        assert!(
            get.connection < token.answered,
            "the vault connection (event {}) was opened only after the token was sent (event {})",
            get.connection,
            token.answered
        );
    }
}

/// An unknown host's challenge is the first request to need the connection, and the
/// GETs that follow the token reuse it.
#[test]
fn challenge_and_gets_share_one_connection() {
    let azure = Azure::start(crate::harness::STANDARD);
    azure
        .kvrun()
        .args([
            "-s",
            &format!("A={}", azure.reference("demo", "db-password")),
        ])
        .args(["-s", &format!("B={}", azure.reference("demo", "api-key"))])
        .child_prints(&["A", "B"])
        .run()
        .success()
        .stdout("A=s3cr3t-db|B=k3y-api|");
    let vault = azure.requests_to("vault:demo");
    assert_eq!(vault.len(), 3, "{vault:?}");
    assert!(vault[0].auth.is_none(), "the challenge comes first");
    assert!(vault.iter().all(|r| r.connection == vault[0].connection));
}
