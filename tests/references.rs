use crate::harness::{Azure, STANDARD};

#[test]
fn every_reference_form_resolves() {
    let azure = Azure::start(STANDARD);
    let vault = azure.vault("demo");
    let host = vault.trim_start_matches("https://");
    azure
        .kvrun()
        .env("KVRUN_VAULT", &vault)
        .args(["-s", "BARE=db-password"])
        .args(["-s", &format!("KV=keyvault://{host}/api-key")])
        .args(["-s", &format!("KV_VERSION=keyvault://{host}/multi/00000000000000000000000000000001")])
        .args(["-s", &format!("URI={vault}/secrets/multi")])
        .args(["-s", &format!("URI_SLASH={vault}/secrets/multi/")])
        .args(["-s", &format!("APP_URI=@Microsoft.KeyVault(SecretUri={vault}/secrets/db-password/)")])
        .args(["-s", &format!("APP_NAME=@Microsoft.KeyVault(VaultName={host};SecretName=multi;SecretVersion=00000000000000000000000000000001)")])
        .child_prints(&["BARE", "KV", "KV_VERSION", "URI", "URI_SLASH", "APP_URI", "APP_NAME"])
        .run()
        .success()
        .stderr_empty()
        .stdout("BARE=s3cr3t-db|KV=k3y-api|KV_VERSION=first|URI=second|URI_SLASH=second|APP_URI=s3cr3t-db|APP_NAME=first|");
}

#[test]
fn mapping_file_found_in_an_ancestor_directory() {
    let azure = Azure::start(STANDARD);
    azure.dir.write(
        "kvrun.toml",
        format!(
            "vault = \"{}\"\n[env]\nDB_PASSWORD = \"db-password\"\nPINNED = {{ secret = \"multi\", version = \"00000000000000000000000000000001\" }}\n",
            azure.vault("demo")
        ),
    );
    let nested = azure.dir.path().join("app/src");
    std::fs::create_dir_all(&nested).unwrap();
    azure
        .kvrun()
        .cwd(&nested)
        .child_prints(&["DB_PASSWORD", "PINNED"])
        .run()
        .success()
        .stdout("DB_PASSWORD=s3cr3t-db|PINNED=first|");
}

#[test]
fn explicit_config_flag_and_env_var() {
    let azure = Azure::start(STANDARD);
    let file = azure.dir.write(
        "conf/app.toml",
        format!("[env]\nKEY = \"{}\"\n", azure.reference("demo", "api-key")),
    );
    azure
        .kvrun()
        .arg("--config")
        .arg(&file)
        .child_prints(&["KEY"])
        .run()
        .success()
        .stdout("KEY=k3y-api|");
    azure
        .kvrun()
        .env("KVRUN_CONFIG", &file)
        .child_prints(&["KEY"])
        .run()
        .success()
        .stdout("KEY=k3y-api|");
}

#[test]
fn inherited_references_are_replaced_and_plain_values_kept() {
    let azure = Azure::start(STANDARD);
    azure
        .kvrun()
        .env("DB", azure.reference("demo", "db-password"))
        .env(
            "APP",
            format!(
                "@Microsoft.KeyVault(SecretUri={}/secrets/api-key)",
                azure.vault("demo")
            ),
        )
        .env("PLAIN", "db-password")
        .child_prints(&["DB", "APP", "PLAIN"])
        .run()
        .success()
        .stdout("DB=s3cr3t-db|APP=k3y-api|PLAIN=db-password|");
}

#[test]
fn precedence_flag_over_file_over_environment() {
    let azure = Azure::start(STANDARD);
    azure.dir.write(
        "kvrun.toml",
        format!(
            "[env]\nA = \"{}\"\nB = \"{}\"\n",
            azure.reference("demo", "api-key"),
            azure.reference("demo", "api-key")
        ),
    );
    azure
        .kvrun()
        .env("A", azure.reference("demo", "db-password"))
        .env("B", azure.reference("demo", "db-password"))
        .env("C", azure.reference("demo", "db-password"))
        .args(["-s", &format!("A={}", azure.reference("demo", "multi"))])
        .child_prints(&["A", "B", "C"])
        .run()
        .success()
        .stdout("A=second|B=k3y-api|C=s3cr3t-db|");
}

#[test]
fn kvrun_secret_env_var_takes_a_comma_separated_list() {
    let azure = Azure::start(STANDARD);
    azure
        .kvrun()
        .env(
            "KVRUN_SECRET",
            format!(
                "A={},B={}",
                azure.reference("demo", "db-password"),
                azure.reference("demo", "api-key")
            ),
        )
        .child_prints(&["A", "B"])
        .run()
        .success()
        .stdout("A=s3cr3t-db|B=k3y-api|");
}

#[test]
fn one_secret_for_many_variables_is_fetched_once() {
    let azure = Azure::start(STANDARD);
    let reference = azure.reference("demo", "db-password");
    azure
        .kvrun()
        .args([
            "-s",
            &format!("A={reference}"),
            "-s",
            &format!("B={reference}"),
            "-s",
            &format!("C={reference}"),
        ])
        .child_prints(&["A", "B", "C"])
        .run()
        .success()
        .stdout("A=s3cr3t-db|B=s3cr3t-db|C=s3cr3t-db|");
    let gets: Vec<_> = azure
        .requests_to("vault:demo")
        .into_iter()
        .filter(|r| r.auth.is_some())
        .collect();
    assert_eq!(gets.len(), 1, "{gets:#?}");
}

#[test]
fn several_vaults_in_one_run() {
    let azure = Azure::start(&format!(
        "{STANDARD}\n[[vault]]\nname = \"second\"\n[[vault.secret]]\nname = \"other\"\nvalue = \"from-second\"\n[[grant]]\nidentity = \"system\"\nvault = \"second\"\npermissions = [\"get\"]\n"
    ));
    azure
        .kvrun()
        .args([
            "-s",
            &format!("A={}", azure.reference("demo", "db-password")),
            "-s",
            &format!("B={}", azure.reference("second", "other")),
        ])
        .child_prints(&["A", "B"])
        .run()
        .success()
        .stdout("A=s3cr3t-db|B=from-second|");
    // One token per audience: each emulated vault is its own audience (its origin).
    assert_eq!(azure.requests_to("imds").len(), 2);
    // And each token only ever reached the vault it was issued for.
    for vault in ["demo", "second"] {
        let origin = azure.vault(vault);
        let audiences: Vec<_> = azure
            .requests_to(&format!("vault:{vault}"))
            .into_iter()
            .filter_map(|r| r.auth)
            .map(|a| a.audience.unwrap_or_default())
            .collect();
        assert!(!audiences.is_empty());
        assert!(
            audiences.iter().all(|a| a.trim_end_matches('/') == origin),
            "{vault}: {audiences:?}"
        );
    }
    assert!(
        azure
            .requests()
            .iter()
            .filter(|r| !r.endpoint.starts_with("vault:"))
            .all(|r| r.auth.as_ref().is_none_or(|a| a.scheme != "Bearer"))
    );
}

#[test]
fn empty_mapping_runs_the_command_without_any_request() {
    let azure = Azure::start(STANDARD);
    azure
        .kvrun()
        .env("KEEP", "x")
        .child_prints(&["KEEP"])
        .run()
        .success()
        .stdout("KEEP=x|");
    assert!(azure.requests().is_empty());
}

/// A malformed override is a usage error before anything is sent.
#[test]
fn resolve_override_is_validated() {
    let azure = Azure::start(STANDARD);
    let marker = azure.dir.path().join("child-started");
    azure
        .kvrun()
        .env("KVRUN_RESOLVE", "kvrundemo.vault.azure.net")
        .args([
            "-s",
            &format!("A={}", azure.reference("demo", "db-password")),
        ])
        .child_touches(&marker)
        .run()
        .code(125)
        .stderr_has("HOST=ADDR");
    assert!(!marker.exists(), "a child started");
    assert!(azure.requests().is_empty());
}
