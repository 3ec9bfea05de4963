//! Bad input, through the real binary: every case exits 125 (or 126/127 for the
//! command) with a message that says what is wrong, never a panic, and never starts
//! a child. Also the two sizes of mapping that are not bad but extreme: empty (see
//! references.rs) and 10,000 entries.

use std::time::{Duration, Instant};

use crate::harness::{Azure, Run, TempDir};

/// Runs kvrun with `args`, a mapping file `toml` (if any) and `env`, and checks it
/// failed before starting anything: 125, `needle` in stderr, no panic, no child.
#[track_caller]
fn refused(toml: Option<&str>, args: &[&str], env: &[(&str, &str)], needle: &str) {
    let dir = TempDir::new();
    if let Some(toml) = toml {
        dir.write("kvrun.toml", toml);
    }
    let marker = dir.path().join("child-started");
    let mut run = Run::new(dir.path()).args(args.iter().copied());
    for (k, v) in env {
        run = run.env(*k, *v);
    }
    let outcome = run.child_touches(&marker).run();
    outcome
        .code(125)
        .stderr_has(needle)
        .stderr_lacks("panicked")
        .stderr_lacks("RUST_BACKTRACE");
    assert!(!marker.exists(), "a child started");
}

const V: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn malformed_references_of_every_form() {
    for (reference, needle) in [
        ("keyvault://", "not a secret reference"),
        ("keyvault://myvault", "not a secret reference"),
        ("keyvault://myvault/", "not a secret reference"),
        ("keyvault://myvault/a/b/c", "not a secret reference"),
        ("keyvault://my_vault/db", "invalid vault name 'my_vault'"),
        (
            "keyvault://myvault/db_password",
            "invalid secret name 'db_password'",
        ),
        ("keyvault://myvault/db/xyz", "invalid secret version 'xyz'"),
        (
            "keyvault://user@host.example/db",
            "invalid vault 'user@host.example'",
        ),
        (
            "https://myvault.vault.azure.net/keys/db",
            "not a Key Vault secret URI",
        ),
        (
            "https://myvault.vault.azure.net/secrets/db?x=1",
            "not a Key Vault secret URI",
        ),
        ("http://myvault.vault.azure.net/secrets/db", "uses http://"),
        ("@Microsoft.KeyVault(", "missing the closing ')'"),
        (
            "@Microsoft.KeyVault()",
            "needs SecretUri, or both VaultName and SecretName",
        ),
        (
            "@Microsoft.KeyVault(VaultName=myvault)",
            "needs SecretUri, or both VaultName and SecretName",
        ),
        (
            "@Microsoft.KeyVault(SecretName=db)",
            "needs SecretUri, or both VaultName and SecretName",
        ),
        (
            "@Microsoft.KeyVault(VaultName=myvault;SecretName=db;Color=blue)",
            "unknown key",
        ),
        (
            "@Microsoft.KeyVault(VaultName=a1;VaultName=b1;SecretName=db)",
            "a key is given twice",
        ),
        (
            "@Microsoft.KeyVault(SecretUri=http://myvault.vault.azure.net/secrets/db)",
            "uses http://",
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db;SecretName=db)",
            "cannot be combined",
        ),
        (
            &format!("@Microsoft.KeyVault(VaultName=myvault;SecretName=db;SecretVersion={V}0)"),
            "invalid secret version",
        ),
        ("db password", "invalid secret name 'db password'"),
        (&"x".repeat(128), "invalid secret name"),
    ] {
        // The same text as a --secret and as an inherited marker (where it is one).
        refused(None, &["-s", &format!("A={reference}")], &[], needle);
        if reference.starts_with("keyvault://") || reference.starts_with("@Microsoft") {
            refused(None, &[], &[("A", reference)], "environment variable A: ");
        }
    }
}

#[test]
fn bad_names_and_duplicates() {
    refused(
        None,
        &["-s", "1A=keyvault://myvault/db"],
        &[],
        "'1A' is not a valid environment variable name",
    );
    refused(
        None,
        &["-s", "A-B=keyvault://myvault/db"],
        &[],
        "'A-B' is not a valid environment variable name",
    );
    refused(
        None,
        &["-s", "=keyvault://myvault/db"],
        &[],
        "'' is not a valid environment variable name",
    );
    refused(
        None,
        &[
            "-s",
            "A=keyvault://myvault/db",
            "-s",
            "A=keyvault://myvault/other",
        ],
        &[],
        "--secret: A is mapped twice",
    );
    refused(
        Some("[env]\nA = \"keyvault://myvault/db\"\nA = \"keyvault://myvault/db\"\n"),
        &[],
        &[],
        "kvrun.toml:3:1",
    );
    refused(
        Some("[env]\n\"A B\" = \"keyvault://myvault/db\"\n"),
        &[],
        &[],
        "'A B' is not a valid environment variable name",
    );
    refused(
        Some("vault = \"x\"\n[env]\nA = \"db\"\n"),
        &[],
        &[],
        "kvrun.toml:1:9: vault: invalid vault name 'x'",
    );
    refused(
        Some("cloud = \"mars\"\n[env]\nA = \"keyvault://myvault/db\"\n"),
        &[],
        &[],
        "kvrun.toml:1:9: unknown cloud 'mars'",
    );
    refused(
        None,
        &[
            "--vault",
            "https://myvault.vault.azure.net/secrets",
            "-s",
            "A=db",
        ],
        &[],
        "must not have a path",
    );
}

#[test]
fn malformed_mapping_files() {
    for (toml, needle) in [
        ("[env\n", "kvrun.toml:1:5"),
        ("vault = 3\n", "kvrun.toml:1:9"),
        (
            "[env]\nA = [\"x\"]\n",
            "kvrun.toml:2:5: A: expected a reference string or a table",
        ),
        (
            "[env]\nA = { secret = 1 }\n",
            "in A: 'secret' must be a string",
        ),
        (
            "[env]\nA = { vault = \"myvault\" }\n",
            "in A: missing 'secret'",
        ),
        (
            "[env]\nA = { secret = \"db\", extra = 1 }\n",
            "in A: unknown key 'extra'",
        ),
        ("[secrets]\nA = \"db\"\n", "unknown field `secrets`"),
        ("\u{feff}[env]\nA = 1\n", "kvrun.toml:2:5"),
    ] {
        refused(Some(toml), &[], &[], needle);
    }
    // An unreadable or missing explicit file.
    refused(
        None,
        &["--config", "/nonexistent/app.toml"],
        &[],
        "/nonexistent/app.toml",
    );
    let dir = TempDir::new();
    refused(
        None,
        &["--config", dir.path().to_str().unwrap()],
        &[],
        "cannot read the mapping file",
    );
    let binary = dir.write("binary.toml", [0xff, 0xfe, 0x00, 0x41]);
    refused(
        None,
        &["--config", binary.to_str().unwrap()],
        &[],
        "cannot read the mapping file",
    );
    refused(
        None,
        &["--config", "/dev/zero"],
        &[],
        "cannot read the mapping file: larger than",
    );
}

#[test]
fn bad_flags_and_environment_settings() {
    for (args, env, needle) in [
        (
            &["--credential", "magic"][..],
            &[][..],
            "invalid value 'magic'",
        ),
        (
            &[],
            &[("KVRUN_CREDENTIAL", "magic")][..],
            "invalid value 'magic'",
        ),
        (&["--timeout", "-1"], &[], "unexpected argument"),
        (
            &[],
            &[("KVRUN_TIMEOUT", "soon")],
            "'soon' is not a number of seconds",
        ),
        (&[], &[("KVRUN_TIMEOUT", "0")], "must be more than 0"),
        (&[], &[("KVRUN_CLOUD", "mars")], "unknown cloud 'mars'"),
        (&["--log-format", "xml"], &[], "invalid value 'xml'"),
        (&[], &[("KVRUN_LOG", "loud")], "invalid value 'loud'"),
        (
            &["--resource-id", "/x", "--client-id", "y"],
            &[],
            "cannot be used with",
        ),
    ] {
        refused(None, args, env, needle);
    }
}

#[test]
fn bad_credential_settings() {
    fn env_sp<'a>(extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
        vec![("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c"), extra]
    }
    for (env, needle) in [
        (
            env_sp(("AZURE_CLIENT_CERTIFICATE_PATH", "/nonexistent/cert.pem")),
            "AZURE_CLIENT_CERTIFICATE_PATH /nonexistent/cert.pem: cannot read it",
        ),
        (
            vec![
                ("AZURE_TENANT_ID", "a/b"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s"),
            ],
            "invalid tenant id 'a/b'",
        ),
        (
            vec![
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s"),
                ("AZURE_AUTHORITY_HOST", "http://login.example"),
            ],
            "AZURE_AUTHORITY_HOST: 'http://login.example' must use https",
        ),
        (
            vec![("AZURE_FEDERATED_TOKEN_FILE", "/f")],
            "AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID and AZURE_TENANT_ID are not",
        ),
        (
            vec![("IDENTITY_ENDPOINT", "not a url"), ("IDENTITY_HEADER", "h")],
            "IDENTITY_ENDPOINT is not a URL",
        ),
        (
            vec![
                ("IDENTITY_ENDPOINT", "https://127.0.0.1:1/t"),
                ("IDENTITY_HEADER", "h"),
                ("IDENTITY_SERVER_THUMBPRINT", "xyz"),
            ],
            "IDENTITY_SERVER_THUMBPRINT is not a SHA-1 thumbprint",
        ),
        (
            vec![("AzureServicesAuthConnectionString", "RunAs=App;RunAs=App")],
            "Key 'runas' is repeated",
        ),
        (
            env_sp(("AZURE_CLIENT_CERTIFICATE_PATH", "/dev/zero")),
            "AZURE_CLIENT_CERTIFICATE_PATH /dev/zero: cannot read it: larger than",
        ),
    ] {
        refused(None, &["-s", "A=keyvault://myvault/db"], &env, needle);
    }
    // A PKCS#12 file with the wrong password names the variable to fix.
    let dir = TempDir::new();
    let key = dir.path().join("k.pem");
    let cert = dir.path().join("c.pem");
    let pfx = dir.path().join("c.pfx");
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=t -keyout {k} -out {c} 2>/dev/null && openssl pkcs12 -export -inkey {k} -in {c} -passout pass:right -out {p}",
            k = key.display(),
            c = cert.display(),
            p = pfx.display()
        ))
        .status()
        .unwrap();
    assert!(ok.success());
    let pfx = pfx.to_str().unwrap();
    refused(
        None,
        &["-s", "A=keyvault://myvault/db"],
        &env_sp(("AZURE_CLIENT_CERTIFICATE_PATH", pfx))
            .into_iter()
            .chain([("AZURE_CLIENT_CERTIFICATE_PASSWORD", "wrong")])
            .collect::<Vec<_>>(),
        "check AZURE_CLIENT_CERTIFICATE_PASSWORD",
    );
}

#[test]
fn ten_thousand_entries_resolve_correctly() {
    const N: usize = 10_000;
    let mut emulator = String::from("[[vault]]\nname = \"big\"\n");
    let mut mapping = String::from("[env]\n");
    for i in 0..N {
        emulator.push_str(&format!(
            "[[vault.secret]]\nname = \"s{i}\"\nvalue = \"value-{i}\"\n"
        ));
        mapping.push_str(&format!("V{i} = \"s{i}\"\n"));
    }
    emulator.push_str("[[identity]]\nname = \"system\"\nkind = \"system-assigned\"\n[[grant]]\nidentity = \"system\"\nvault = \"big\"\npermissions = [\"get\"]\n");
    let azure = Azure::start(&emulator);
    azure.dir.write(
        "kvrun.toml",
        format!("vault = \"{}\"\n{mapping}", azure.vault("big")),
    );
    let started = Instant::now();
    let outcome = azure
        .kvrun()
        .command([
            "/bin/sh",
            "-c",
            "env | grep -c '^V[0-9]*=value-' ; printf '%s|%s|%s' \"$V0\" \"$V4242\" \"$V9999\"",
        ])
        .run();
    let took = started.elapsed();
    outcome
        .success()
        .stdout(&format!("{N}\nvalue-0|value-4242|value-9999"));
    let gets = azure
        .requests_to("vault:big")
        .into_iter()
        .filter(|r| r.auth.is_some())
        .count();
    assert_eq!(gets, N, "each secret fetched exactly once");
    // Generous: about a second here; the bound only catches pathological behaviour.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

/// Values that may be secrets are never echoed in the errors about them.
#[test]
fn errors_do_not_echo_values_that_may_be_secrets() {
    let dir = TempDir::new();
    for (env, needle) in [
        // The tail of an unquoted client secret after a ';'.
        (
            vec![(
                "AzureServicesAuthConnectionString",
                "RunAs=App;AppId=a;TenantId=t;AppKey=abc;SECRET-TAIL-1",
            )],
            "is not Key=Value",
        ),
        // A value that merely starts like a reference (a nested kvrun's child has values).
        (
            vec![("X", "keyvault://SECRET-TAIL-1")],
            "environment variable X:",
        ),
        (
            vec![("X", "@Microsoft.KeyVault(SECRET-TAIL-1)")],
            "environment variable X:",
        ),
        // Credentials inside endpoint variables.
        (
            vec![(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                "http://u:SECRET-TAIL-1@127.0.0.1:9",
            )],
            "must not contain a user name or password",
        ),
        (
            vec![
                (
                    "IDENTITY_ENDPOINT",
                    "http://u:SECRET-TAIL-1@127.0.0.1:9/msi",
                ),
                ("IDENTITY_HEADER", "h"),
            ],
            "must not contain a user name or password",
        ),
        (
            vec![
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s"),
                (
                    "AZURE_AUTHORITY_HOST",
                    "https://u:SECRET-TAIL-1@login.example",
                ),
            ],
            "must not contain a user name or password",
        ),
    ] {
        let mut run = Run::new(dir.path())
            .args(["-s", "A=keyvault://myvault/db"])
            .command(["true"]);
        for (k, v) in &env {
            run = run.env(*k, *v);
        }
        run.run()
            .code(125)
            .stderr_has(needle)
            .never_shows("SECRET-TAIL-1");
    }
}
