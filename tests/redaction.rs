//! Canary values and tokens, at the highest verbosity, on success and failure paths:
//! none may appear in kvrun's stdout, stderr or logs. The child prints nothing, so
//! anything seen came from kvrun.

use crate::harness::{Azure, Outcome};

const CANARY_VALUE: &str = "CANARY-VALUE-7f3a9c";
const CANARY_SECRET: &str = "CANARY-CLIENT-SECRET-51d2";
const SP_CLIENT: &str = "12121212-1212-4212-8212-121212121212";

fn config() -> String {
    format!(
        r#"
[[vault]]
name = "demo"
[[vault.secret]]
name = "canary"
value = "{CANARY_VALUE}"
[[vault.secret]]
name = "off"
value = "{CANARY_VALUE}-disabled"
enabled = false
[[identity]]
name = "system"
kind = "system-assigned"
[[identity]]
name = "sp"
kind = "service-principal"
client_id = "{SP_CLIENT}"
secret = "{CANARY_SECRET}"
[[grant]]
identity = "system"
vault = "demo"
permissions = ["get"]
[[grant]]
identity = "sp"
vault = "demo"
permissions = ["get"]
"#
    )
}

/// No canary, and nothing that is one of the tokens the emulator issued.
#[track_caller]
fn clean(azure: &Azure, outcome: &Outcome) {
    outcome.never_shows(CANARY_VALUE).never_shows(CANARY_SECRET);
    let fingerprints: Vec<String> = azure
        .requests()
        .into_iter()
        .filter_map(|r| r.auth.map(|a| a.fingerprint))
        .collect();
    for text in [&outcome.stdout, &outcome.stderr] {
        for word in text.split(|c: char| c.is_whitespace() || "\"',:=()[]{}".contains(c)) {
            assert!(
                word.is_empty() || !fingerprints.contains(&kvrun_emulator::fingerprint(word)),
                "a token appeared in kvrun's output"
            );
        }
        assert!(
            !text.contains("eyJ"),
            "something token-shaped appeared in kvrun's output"
        );
    }
}

#[test]
fn nothing_secret_at_maximum_verbosity_on_success() {
    let azure = Azure::start(&config());
    for format in ["text", "json"] {
        let outcome = azure
            .kvrun()
            .args(["-vvv", "--timings", "--log-format", format])
            .args(["-s", &format!("A={}", azure.reference("demo", "canary"))])
            .command(["true"])
            .run();
        outcome.success().stderr_has("timing");
        clean(&azure, &outcome);
        let outcome = azure
            .kvrun()
            .env("KVRUN_LOG", "trace")
            .args(["-s", &format!("A={}", azure.reference("demo", "canary"))])
            .arg("check")
            .run();
        outcome.success();
        clean(&azure, &outcome);
    }
}

#[test]
fn nothing_secret_on_failure_paths() {
    let azure = Azure::start(&config());
    let run = |args: &[&str]| {
        let outcome = azure
            .kvrun()
            .args(["-vvv"])
            .args(args.iter().copied())
            .command(["true"])
            .run();
        clean(&azure, &outcome);
        outcome
    };
    run(&["-s", &format!("A={}", azure.reference("demo", "off"))]).code(125);
    run(&["-s", &format!("A={}", azure.reference("demo", "missing"))]).code(125);
    let outcome = azure
        .kvrun()
        .args([
            "-vvv",
            "-s",
            &format!("A={}", azure.reference("demo", "canary")),
        ])
        .env_remove("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .env("AZURE_TENANT_ID", azure.emulator.tenant_id())
        .env("AZURE_AUTHORITY_HOST", azure.emulator.authority_host())
        .env("AZURE_CLIENT_ID", SP_CLIENT)
        .env("AZURE_CLIENT_SECRET", format!("{CANARY_SECRET}-wrong"))
        .command(["true"])
        .run();
    outcome.code(125);
    clean(&azure, &outcome);
    let outcome = azure
        .kvrun()
        .args([
            "-vvv",
            "-s",
            &format!("A={}", azure.reference("demo", "canary")),
        ])
        .command(["kvrun-not-a-command"])
        .run();
    outcome.code(127);
    clean(&azure, &outcome);
}
