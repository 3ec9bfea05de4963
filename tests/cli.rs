use crate::harness::{Azure, Run, STANDARD, TempDir};

#[test]
fn help_and_version_exit_zero() {
    let dir = TempDir::new();
    let help = Run::new(dir.path()).arg("--help").run();
    help.success()
        .stdout_has("Usage: kvrun")
        .stdout_has("--secret")
        .stdout_has("Exit status");
    Run::new(dir.path())
        .arg("--version")
        .run()
        .success()
        .stdout_has(env!("CARGO_PKG_VERSION"));
}

#[test]
fn usage_errors_exit_125() {
    let dir = TempDir::new();
    for args in [
        &["--credential", "magic", "--", "true"][..],
        &["--timeout", "0", "--", "true"],
        &["--no-such-flag", "--", "true"],
        &["--client-id", "a", "--object-id", "b", "--", "true"],
        &["-s", "NOEQUALS", "--", "true"],
        &["-s", "1BAD=x", "--", "true"],
    ] {
        let outcome = Run::new(dir.path()).args(args.iter().copied()).run();
        outcome.code(125);
        assert!(!outcome.stderr.is_empty(), "{args:?}");
    }
    Run::new(dir.path())
        .run()
        .code(125)
        .stderr_has("no command given");
    Run::new(dir.path())
        .env("KVRUN_CREDENTIAL", "bogus")
        .command(["true"])
        .run()
        .code(125)
        .stderr_has("bogus");
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126() {
    let azure = Azure::start(STANDARD);
    let secret = format!("A={}", azure.reference("demo", "db-password"));
    azure
        .kvrun()
        .args(["-s", &secret])
        .command(["kvrun-no-such-command"])
        .run()
        .code(127)
        .stderr_has("kvrun-no-such-command: command not found");
    let script = azure.dir.write("not-executable.sh", "#!/bin/sh\necho hi\n");
    azure
        .kvrun()
        .args(["-s", &secret])
        .command([script])
        .run()
        .code(126)
        .stderr_has("permission denied");
    let directory = azure.dir.path().join("a-directory");
    std::fs::create_dir_all(&directory).unwrap();
    azure.kvrun().command([directory]).run().code(126);
}

#[test]
fn the_commands_own_status_is_kept() {
    let dir = TempDir::new();
    Run::new(dir.path())
        .command(["/bin/sh", "-c", "exit 42"])
        .run()
        .code(42);
}

#[test]
fn bad_mapping_files_name_file_line_and_column() {
    let dir = TempDir::new();
    for (contents, needle) in [
        (
            "[env]\nA = \"x\"\nB = 1\n",
            "kvrun.toml:3:5: B: expected a reference string",
        ),
        (
            "vault = \"demo\"\nfoo = 1\n",
            "kvrun.toml:2:1: unknown field `foo`",
        ),
        (
            "[env]\nA = { secret = \"x\", optonal = true }\n",
            "kvrun.toml:2:5: in A: unknown key 'optonal'",
        ),
        ("[env\n", "kvrun.toml:1:5"),
        (
            "[env]\nA = \"keyvault://v/x\"\nA = \"y\"\n",
            "kvrun.toml:3:1",
        ),
        (
            "[env]\nA = \"bad_name\"\n",
            "kvrun.toml:2:5: A: invalid secret name 'bad_name'",
        ),
    ] {
        std::fs::write(dir.path().join("kvrun.toml"), contents).unwrap();
        Run::new(dir.path())
            .command(["true"])
            .run()
            .code(125)
            .stderr_has(needle);
    }
}

#[test]
fn all_configuration_problems_are_reported_together() {
    let dir = TempDir::new();
    Run::new(dir.path())
        .env("E", "keyvault://x/")
        .args([
            "-s",
            "A=http://v.vault.azure.net/secrets/a",
            "-s",
            "B=nameonly",
            "-s",
            "C=keyvault://ab/c",
        ])
        .command(["true"])
        .run()
        .code(125)
        .stderr_has("environment variable E")
        .stderr_has("--secret A: 'http://v.vault.azure.net/secrets/a' uses http://")
        .stderr_has("--secret B: 'nameonly' names no vault")
        .stderr_has("--secret C: invalid vault name 'ab'");
}

#[test]
fn check_prints_a_table_without_values() {
    let azure = Azure::start(STANDARD);
    let vault = azure.vault("demo");
    azure.dir.write(
        "kvrun.toml",
        format!(
            "vault = \"{vault}\"\n[env]\nDB = \"db-password\"\nOLD = {{ secret = \"multi\", version = \"00000000000000000000000000000001\" }}\nMAYBE = {{ secret = \"nope\", optional = true }}\n"
        ),
    );
    let outcome = azure.kvrun().arg("check").run();
    outcome
        .success()
        .never_shows("s3cr3t-db")
        .never_shows("first");
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", outcome.stdout);
    assert!(
        lines[0].starts_with("VAR")
            && lines[0].contains("VAULT")
            && lines[0].contains("SECRET")
            && lines[0].contains("VERSION")
            && lines[0].ends_with("STATUS")
    );
    assert!(
        lines[1].starts_with("DB ")
            && lines[1].contains(&vault)
            && lines[1].contains("db-password")
            && lines[1].ends_with("ok"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("MAYBE") && lines[2].contains("absent, optional"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("OLD") && lines[3].contains("00000000000000000000000000000001"),
        "{}",
        lines[3]
    );

    azure.dir.write(
        "kvrun.toml",
        format!("vault = \"{vault}\"\n[env]\nDB = \"db-password\"\nGONE = \"nope\"\n"),
    );
    azure
        .kvrun()
        .arg("check")
        .run()
        .code(1)
        .stdout_has("error: HTTP 404")
        .stderr_has("GONE: vault");
}

#[test]
fn a_program_named_check_runs_after_double_dash() {
    let dir = TempDir::new();
    Run::new(dir.path())
        .command(["check"])
        .run()
        .code(127)
        .stderr_has("check: command not found");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let azure = Azure::start(STANDARD);
    let outcome = azure
        .kvrun()
        .args(["-vv", "--log-format", "json", "--timings"])
        .args([
            "-s",
            &format!("A={}", azure.reference("demo", "db-password")),
        ])
        .args(["-s", &format!("B={}", azure.reference("demo", "no-such"))])
        .command(["true"])
        .run();
    outcome.code(125);
    let mut levels = Vec::new();
    for line in outcome.stderr.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        levels.push(value["level"].as_str().unwrap_or("").to_owned());
    }
    assert!(levels.iter().any(|l| l == "debug"), "{levels:?}");
    let error = outcome
        .stderr
        .lines()
        .find(|l| l.contains("\"error\""))
        .unwrap();
    let error: serde_json::Value = serde_json::from_str(error).unwrap();
    assert!(
        error["message"].as_str().unwrap().starts_with("B: vault"),
        "{error}"
    );
    assert!(
        error["hint"].as_str().unwrap().contains("no-such"),
        "{error}"
    );
}
