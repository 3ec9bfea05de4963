use std::process::{Command, Stdio};

use crate::harness::{Azure, KVRUN, STANDARD};

const AWKWARD: &str = r#"
[[vault]]
name = "demo"
[[vault.secret]]
name = "awkward"
value = "  line one\nline two=with=equals\r\n\tünïcødé ✓ \"quoted\" 'single' $HOME `tick` \\ end  "
[[vault.secret]]
name = "empty"
value = ""
[[vault.secret]]
name = "with-nul"
value = "before\u0000after"
[[identity]]
name = "system"
kind = "system-assigned"
[[grant]]
identity = "system"
vault = "demo"
permissions = ["get"]
"#;

#[test]
fn values_arrive_byte_exact() {
    let azure = Azure::start(AWKWARD);
    let expected =
        "  line one\nline two=with=equals\r\n\tünïcødé ✓ \"quoted\" 'single' $HOME `tick` \\ end  ";
    azure
        .kvrun()
        .args([
            "-s",
            &format!("AWK={}", azure.reference("demo", "awkward")),
            "-s",
            &format!("EMPTY={}", azure.reference("demo", "empty")),
        ])
        .child_prints(&["AWK", "EMPTY"])
        .run()
        .success()
        .stdout(&format!("AWK={expected}|EMPTY=|"));
}

#[test]
fn a_value_with_nul_is_refused_and_no_child_starts() {
    let azure = Azure::start(AWKWARD);
    let marker = azure.dir.path().join("started");
    azure
        .kvrun()
        .args([
            "-s",
            &format!("BAD={}", azure.reference("demo", "with-nul")),
        ])
        .child_touches(&marker)
        .run()
        .code(125)
        .stderr_has("BAD: vault")
        .stderr_has("NUL byte")
        .never_shows("before");
    assert!(!marker.exists(), "the child started");
}

#[test]
fn the_command_replaces_kvrun_with_the_same_pid_and_argv() {
    let azure = Azure::start(STANDARD);
    let child = Command::new(KVRUN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            azure.emulator.imds_host(),
        )
        .env("SSL_CERT_FILE", azure.emulator.ca_pem_path())
        .args([
            "-s",
            &format!("A={}", azure.reference("demo", "db-password")),
        ])
        .args([
            "--",
            "/bin/sh",
            "-c",
            "printf '%s|%s|%s' \"$$\" \"$1\" \"$2\"",
            "sh",
            "two words",
            "--secret",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{pid}|two words|--secret")
    );
}

#[test]
fn the_access_token_never_reaches_the_child() {
    let azure = Azure::start(STANDARD);
    let outcome = azure
        .kvrun()
        .args([
            "-s",
            &format!("A={}", azure.reference("demo", "db-password")),
        ])
        .command(["/bin/sh", "-c", "env; cat /proc/self/cmdline"])
        .run();
    outcome.success();
    let fingerprints: Vec<String> = azure
        .requests()
        .into_iter()
        .filter_map(|r| r.auth.map(|a| a.fingerprint))
        .collect();
    assert!(!fingerprints.is_empty());
    for line in outcome.stdout.lines() {
        let value = line.split_once('=').map_or(line, |(_, v)| v);
        for word in value.split(['\0', ' ']) {
            assert!(
                !fingerprints.contains(&kvrun_emulator::fingerprint(word)),
                "a token reached the child"
            );
        }
        assert!(
            !line.contains("eyJ"),
            "something token-shaped reached the child: {}",
            line.split('=').next().unwrap_or("")
        );
    }
}

#[test]
fn optional_absent_secret_leaves_the_variable_unset_even_if_inherited() {
    let azure = Azure::start(STANDARD);
    let missing = azure.reference("demo", "not-there");
    azure.dir.write(
        "kvrun.toml",
        format!(
            "[env]\nOPT = {{ secret = \"not-there\", vault = \"{}\", optional = true }}\n",
            azure.vault("demo")
        ),
    );
    azure
        .kvrun()
        .env("OPT", &missing)
        .child_prints(&["OPT"])
        .run()
        .success()
        .stdout("OPT unset|")
        .stderr_has("OPT: optional secret not-there");
}

#[test]
fn core_dumps_are_off_while_secrets_are_held_and_restored_for_the_child() {
    // The vault answers slowly, so there is time to look at kvrun from outside.
    let azure = Azure::start(
        &STANDARD.replace("name = \"demo\"\n", "name = \"demo\"\nlatency_ms = 1500\n"),
    );
    let script = format!(
        "ulimit -S -c 2048 && exec {KVRUN} -s A={} -- /bin/sh -c 'ulimit -c'",
        azure.reference("demo", "db-password")
    );
    let child = Command::new("/bin/sh")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            azure.emulator.imds_host(),
        )
        .env("SSL_CERT_FILE", azure.emulator.ca_pem_path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen_limit = None;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("kvrun") {
            let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
            seen_limit = limits
                .lines()
                .find(|l| l.starts_with("Max core file size"))
                .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_owned());
            if seen_limit.as_deref() == Some("0") {
                break;
            }
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        seen_limit.as_deref(),
        Some("0"),
        "kvrun's soft core limit while resolving"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "2048",
        "the child's core limit"
    );
}
