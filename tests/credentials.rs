use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use crate::harness::{Azure, Run};

const TENANT_APP: &str = "33333333-3333-4333-8333-333333333333";
const UA_CLIENT: &str = "44444444-4444-4444-8444-444444444444";
const UA_OBJECT: &str = "55555555-5555-4555-8555-555555555555";
const UA_RESOURCE: &str = "/subscriptions/00000000-0000-4000-8000-000000000000/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app-identity";
const WI_CLIENT: &str = "66666666-6666-4666-8666-666666666666";

/// Every kind of identity, each granted `get` on vault `demo` (except `nogrant`).
fn config(extra: &str) -> String {
    format!(
        r#"
[[vault]]
name = "demo"
[[vault.secret]]
name = "db-password"
value = "s3cr3t-db"

[[identity]]
name = "system"
kind = "system-assigned"
[[identity]]
name = "app-identity"
kind = "user-assigned"
client_id = "{UA_CLIENT}"
object_id = "{UA_OBJECT}"
resource_id = "{UA_RESOURCE}"
[[identity]]
name = "ci-app"
kind = "service-principal"
client_id = "{TENANT_APP}"
secret = "correct-horse"
{extra}
[[grant]]
identity = "system"
vault = "demo"
permissions = ["get"]
[[grant]]
identity = "app-identity"
vault = "demo"
permissions = ["get"]
[[grant]]
identity = "ci-app"
vault = "demo"
permissions = ["get"]
"#
    )
}

/// kvrun with no identity configured at all: each test adds one source's variables.
fn bare(azure: &Azure) -> Run {
    Run::new(azure.dir.path())
        .env("SSL_CERT_FILE", azure.emulator.ca_pem_path())
        .args([
            "-s",
            &format!("DB={}", azure.reference("demo", "db-password")),
        ])
        .child_prints(&["DB"])
}

fn entra(run: Run, azure: &Azure) -> Run {
    run.env("AZURE_AUTHORITY_HOST", azure.emulator.authority_host())
        .env("AZURE_TENANT_ID", azure.emulator.tenant_id())
}

/// The identity that received the vault's token, from the emulator's request log.
fn vault_caller(azure: &Azure) -> String {
    azure
        .requests_to("vault:demo")
        .into_iter()
        .filter(|r| r.status == 200)
        .find_map(|r| r.auth.and_then(|a| a.identity))
        .expect("an authorised vault request")
}

#[test]
fn imds_system_assigned() {
    let azure = Azure::start(&config(""));
    bare(&azure)
        .env(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            azure.emulator.imds_host(),
        )
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert_eq!(vault_caller(&azure), "system");
}

#[test]
fn imds_user_assigned_by_each_id() {
    for args in [
        vec!["--client-id", UA_CLIENT],
        vec!["--object-id", UA_OBJECT],
        vec!["--resource-id", UA_RESOURCE],
    ] {
        let azure = Azure::start(&config(""));
        bare(&azure)
            .env(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                azure.emulator.imds_host(),
            )
            .args(args.clone())
            .run()
            .success()
            .stdout("DB=s3cr3t-db|");
        assert_eq!(vault_caller(&azure), "app-identity", "{args:?}");
    }
    // AZURE_CLIENT_ID picks the user-assigned identity too (as in the Azure SDKs).
    let azure = Azure::start(&config(""));
    bare(&azure)
        .env(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            azure.emulator.imds_host(),
        )
        .env("AZURE_CLIENT_ID", UA_CLIENT)
        .run()
        .success();
    assert_eq!(vault_caller(&azure), "app-identity");
}

#[test]
fn app_service_2019_and_legacy_2017() {
    let azure = Azure::start(&config(""));
    bare(&azure)
        .env("IDENTITY_ENDPOINT", azure.emulator.identity_endpoint())
        .env("IDENTITY_HEADER", azure.emulator.identity_header())
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert!(!azure.requests_to("app-service").is_empty());
    bare(&azure)
        .env("IDENTITY_ENDPOINT", azure.emulator.identity_endpoint())
        .env("IDENTITY_HEADER", azure.emulator.identity_header())
        .args(["--resource-id", UA_RESOURCE])
        .run()
        .success();
    assert_eq!(vault_caller(&azure), "system");
    bare(&azure)
        .env("MSI_ENDPOINT", azure.emulator.identity_endpoint())
        .env("MSI_SECRET", azure.emulator.identity_header())
        .env("AZURE_CLIENT_ID", UA_CLIENT)
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
}

#[test]
fn app_service_with_a_wrong_header_fails_clearly() {
    let azure = Azure::start(&config(""));
    bare(&azure)
        .env("IDENTITY_ENDPOINT", azure.emulator.identity_endpoint())
        .env("IDENTITY_HEADER", "not-the-header")
        .run()
        .code(125)
        .stderr_has("no access token from App Service managed identity")
        .stderr_has("needed for DB")
        .never_shows("not-the-header");
}

#[test]
fn service_principal_with_a_secret() {
    let azure = Azure::start(&config(""));
    entra(bare(&azure), &azure)
        .env("AZURE_CLIENT_ID", TENANT_APP)
        .env("AZURE_CLIENT_SECRET", "correct-horse")
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert_eq!(vault_caller(&azure), "ci-app");
}

#[test]
fn service_principal_errors_carry_aadsts_hints() {
    let azure = Azure::start(&config(""));
    entra(bare(&azure), &azure)
        .env("AZURE_CLIENT_ID", TENANT_APP)
        .env("AZURE_CLIENT_SECRET", "battery-staple")
        .run()
        .code(125)
        .stderr_has("AADSTS7000215")
        .stderr_has("the secret's Value")
        .never_shows("battery-staple");
    entra(bare(&azure), &azure)
        .env("AZURE_CLIENT_ID", "77777777-7777-4777-8777-777777777777")
        .env("AZURE_CLIENT_SECRET", "x")
        .run()
        .code(125)
        .stderr_has("AADSTS700016")
        .stderr_has("wrong tenant");
    // Permanent: not retried.
    let posts = azure
        .requests_to("entra")
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 2);
}

#[test]
fn service_principal_with_a_certificate() {
    let azure = Azure::start(&config(""));
    let key = azure.dir.path().join("sp.pem");
    let cert = azure.dir.path().join("sp-cert.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kvrun-test-sp",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let bundle = azure.dir.write(
        "bundle.pem",
        [std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()].concat(),
    );
    let cert_app = "88888888-8888-4888-8888-888888888888";
    let azure = Azure::start(&config(&format!(
        "[[identity]]\nname = \"cert-app\"\nkind = \"service-principal\"\nclient_id = \"{cert_app}\"\ncertificate = \"{}\"\n[[grant]]\nidentity = \"cert-app\"\nvault = \"demo\"\npermissions = [\"get\"]\n",
        cert.display()
    )));
    entra(bare(&azure), &azure)
        .env("AZURE_CLIENT_ID", cert_app)
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &bundle)
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert_eq!(vault_caller(&azure), "cert-app");
}

#[test]
fn workload_identity_reads_the_federated_token_file() {
    let probe = Azure::start(&config(""));
    let token_file = probe.dir.path().join("azure-identity-token");
    let azure = Azure::start(&config(&format!(
        "[[identity]]\nname = \"pod\"\nkind = \"workload\"\nclient_id = \"{WI_CLIENT}\"\ntoken_file = \"{}\"\nissuer = \"https://oidc.kvrun-emulator.test/cluster\"\nsubject = \"system:serviceaccount:default:app\"\n[[grant]]\nidentity = \"pod\"\nvault = \"demo\"\npermissions = [\"get\"]\n",
        token_file.display()
    )));
    entra(bare(&azure), &azure)
        .env("AZURE_CLIENT_ID", WI_CLIENT)
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert_eq!(vault_caller(&azure), "pod");
    entra(bare(&azure), &azure)
        .env("AZURE_CLIENT_ID", WI_CLIENT)
        .env(
            "AZURE_FEDERATED_TOKEN_FILE",
            probe.dir.path().join("missing"),
        )
        .run()
        .code(125)
        .stderr_has("cannot read AZURE_FEDERATED_TOKEN_FILE");
}

/// A stand-in `az` that answers `az account get-access-token` with a token from the
/// emulator's IMDS, in the CLI's output shape.
fn fake_az(azure: &Azure, body: &str) -> std::path::PathBuf {
    let bin = azure.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let az = bin.join("az");
    std::fs::write(&az, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn azure_cli_token() {
    let azure = Azure::start(&config(""));
    let imds = azure.emulator.imds_host();
    let bin = fake_az(
        &azure,
        &format!(
            r#"[ "$1 $2" = "account get-access-token" ] || exit 2
resource=""; while [ $# -gt 0 ]; do [ "$1" = "--resource" ] && resource="$2"; shift; done
exec python3 -c '
import json, sys, urllib.parse, urllib.request
url = "{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + urllib.parse.quote(sys.argv[1], safe="")
token = json.load(urllib.request.urlopen(urllib.request.Request(url, headers={{"Metadata": "true"}})))
print(json.dumps({{"accessToken": token["access_token"], "expiresOn": "2030-01-02 03:04:05.000000", "expires_on": int(token["expires_on"]), "tokenType": "Bearer"}}))
' "$resource""#
        ),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    bare(&azure)
        .env("PATH", &path)
        .args(["--credential", "azure-cli"])
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert_eq!(vault_caller(&azure), "system");
}

#[test]
fn azure_cli_not_signed_in_or_missing() {
    let azure = Azure::start(&config(""));
    let bin = fake_az(
        &azure,
        "echo \"ERROR: Please run 'az login' to setup account.\" >&2; exit 1",
    );
    bare(&azure)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .args(["--credential", "azure-cli"])
        .run()
        .code(125)
        .stderr_has("not signed in")
        .stderr_has("run 'az login'");
    bare(&azure)
        .env("PATH", "/nonexistent")
        .args(["--credential", "azure-cli"])
        .command(["/bin/true"])
        .run()
        .code(125)
        .stderr_has("az is not installed");
}

#[test]
fn connection_string_forms() {
    let azure = Azure::start(&config(""));
    bare(&azure)
        .env(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            azure.emulator.imds_host(),
        )
        .env(
            "AzureServicesAuthConnectionString",
            format!("RunAs=App;AppId={UA_CLIENT}"),
        )
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert_eq!(vault_caller(&azure), "app-identity");
    let azure = Azure::start(&config(""));
    bare(&azure)
        .env("AZURE_AUTHORITY_HOST", azure.emulator.authority_host())
        .env(
            "AzureServicesAuthConnectionString",
            format!(
                "RunAs=App; AppId={TENANT_APP}; TenantId={}; AppKey=correct-horse",
                azure.emulator.tenant_id()
            ),
        )
        .run()
        .success();
    assert_eq!(vault_caller(&azure), "ci-app");
    bare(&azure)
        .env("AzureServicesAuthConnectionString", "RunAs=CurrentUser")
        .run()
        .code(125)
        .stderr_has("AzureServicesAuthConnectionString")
        .stderr_has("Integrated Windows");
}

#[test]
fn forced_environment_credential_without_variables_lists_what_was_tried() {
    let azure = Azure::start(&config(""));
    bare(&azure)
        .env(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            azure.emulator.imds_host(),
        )
        .args(["--credential", "environment"])
        .run()
        .code(125)
        .stderr_has("no credential is available")
        .stderr_has("AZURE_CLIENT_SECRET")
        .stderr_has("AzureServicesAuthConnectionString: not set");
    assert!(azure.requests().is_empty());
}

/// `bare` plus one of the emulator's extra identity endpoints' variables.
fn with_env(run: Run, pairs: Vec<(String, String)>) -> Run {
    pairs.into_iter().fold(run, |run, (k, v)| run.env(k, v))
}

#[test]
fn cloud_shell() {
    let azure = Azure::start(&config(""));
    with_env(bare(&azure), azure.emulator.cloud_shell_env())
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert!(
        azure
            .requests_to("cloud-shell")
            .iter()
            .any(|r| r.method == "POST")
    );
    with_env(bare(&azure), azure.emulator.cloud_shell_env())
        .args(["--client-id", UA_CLIENT])
        .run()
        .code(125)
        .stderr_has("Cloud Shell")
        .stderr_has("cannot be selected");
}

#[test]
fn service_fabric_with_a_pinned_certificate() {
    let azure = Azure::start(&config(""));
    with_env(bare(&azure), azure.emulator.service_fabric_env())
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert!(!azure.requests_to("service-fabric").is_empty());
    // Another thumbprint: the endpoint's certificate is refused, the header never sent.
    let pairs = azure
        .emulator
        .service_fabric_env()
        .into_iter()
        .map(|(k, v)| {
            if k == "IDENTITY_SERVER_THUMBPRINT" {
                (k, "00".repeat(20))
            } else {
                (k, v)
            }
        })
        .collect();
    let before = azure.requests_to("service-fabric").len();
    with_env(bare(&azure), pairs)
        .run()
        .code(125)
        .stderr_has("Service Fabric");
    assert_eq!(
        azure.requests_to("service-fabric").len(),
        before,
        "a request reached the endpoint past a wrong thumbprint"
    );
}

#[test]
fn azure_ml_and_its_default_identity() {
    let azure = Azure::start(&config(""));
    with_env(bare(&azure), azure.emulator.azure_ml_env())
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    assert!(
        azure
            .requests_to("azure-ml")
            .iter()
            .all(|r| r.query.contains("clientid="))
    );
}

#[test]
fn arc_refuses_a_key_file_outside_the_agent_directory() {
    let azure = Azure::start(&config(""));
    with_env(bare(&azure), azure.emulator.arc_env())
        .run()
        .code(125)
        .stderr_has("Azure Arc")
        // Either the agent directory is absent here, or the file is outside it.
        .stderr_has("/var/opt/azcmagent/tokens");
    let arc = azure.requests_to("arc");
    assert!(
        !arc.is_empty() && arc.iter().all(|r| r.auth.is_none()),
        "the key file must not be sent: {arc:#?}"
    );
}

#[test]
fn arc_key_file_challenge_succeeds_from_the_agent_directory() {
    // kvrun reads Arc key files only from the agent's own directory, as the Azure
    // SDKs do; creating it needs root, which this suite (and CI) runs as.
    if let Err(e) = std::fs::create_dir_all(kvrun::credential::arc::KEY_DIRECTORY) {
        panic!(
            "cannot create {} ({e}): run the tests as root",
            kvrun::credential::arc::KEY_DIRECTORY
        );
    }
    let azure = Azure::start(&config(&format!(
        "[arc]\nkey_dir = \"{}\"\n",
        kvrun::credential::arc::KEY_DIRECTORY
    )));
    with_env(bare(&azure), azure.emulator.arc_env())
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    let arc: Vec<_> = azure
        .requests_to("arc")
        .into_iter()
        .map(|r| (r.status, r.auth.map(|a| a.scheme)))
        .collect();
    assert_eq!(arc, [(401, None), (200, Some("Basic".to_owned()))]);
    assert_eq!(vault_caller(&azure), "system");
    with_env(bare(&azure), azure.emulator.arc_env())
        .args(["--client-id", UA_CLIENT])
        .run()
        .code(125)
        .stderr_has("supports only the system-assigned identity");
}

#[test]
fn connection_string_with_a_certificate_kept_in_key_vault() {
    use base64::Engine as _;
    let scratch = crate::harness::TempDir::new();
    let (key, cert, pfx) = (
        scratch.path().join("k.pem"),
        scratch.path().join("c.pem"),
        scratch.path().join("c.pfx"),
    );
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req".as_ref(),
        "-x509".as_ref(),
        "-newkey".as_ref(),
        "rsa:2048".as_ref(),
        "-nodes".as_ref(),
        "-days".as_ref(),
        "2".as_ref(),
        "-subj".as_ref(),
        "/CN=kvrun-kv-cert".as_ref(),
        "-keyout".as_ref(),
        key.as_os_str(),
        "-out".as_ref(),
        cert.as_os_str(),
    ]);
    // Key Vault keeps a certificate's PFX base64-encoded, with an empty password.
    openssl(&[
        "pkcs12".as_ref(),
        "-export".as_ref(),
        "-inkey".as_ref(),
        key.as_os_str(),
        "-in".as_ref(),
        cert.as_os_str(),
        "-passout".as_ref(),
        "pass:".as_ref(),
        "-out".as_ref(),
        pfx.as_os_str(),
    ]);
    let pfx_base64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&pfx).unwrap());
    let app = "99999999-0000-4000-8000-000000000001";
    let azure = Azure::start(&config(&format!(
        "[[identity]]\nname = \"kv-cert-app\"\nkind = \"service-principal\"\nclient_id = \"{app}\"\ncertificate = \"{}\"\n[[grant]]\nidentity = \"kv-cert-app\"\nvault = \"demo\"\npermissions = [\"get\"]\n[[vault]]\nname = \"certs\"\n[[vault.secret]]\nname = \"app-cert\"\nvalue = \"{pfx_base64}\"\ncontent_type = \"application/x-pkcs12\"\n[[grant]]\nidentity = \"system\"\nvault = \"certs\"\npermissions = [\"get\"]\n",
        cert.display()
    )));
    bare(&azure)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", azure.emulator.imds_host())
        .env("AZURE_AUTHORITY_HOST", azure.emulator.authority_host())
        .env(
            "AzureServicesAuthConnectionString",
            format!("RunAs=App;AppId={app};TenantId={};KeyVaultCertificateSecretIdentifier={}/secrets/app-cert", azure.emulator.tenant_id(), azure.vault("certs")),
        )
        .run()
        .success()
        .stdout("DB=s3cr3t-db|");
    let cert_reader = azure
        .requests_to("vault:certs")
        .into_iter()
        .find_map(|r| r.auth.and_then(|a| a.identity));
    assert_eq!(
        cert_reader.as_deref(),
        Some("system"),
        "the certificate is read with the managed identity"
    );
    assert_eq!(
        vault_caller(&azure),
        "kv-cert-app",
        "the secret is read as the service principal"
    );
}
