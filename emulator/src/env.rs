//! The environment that points clients at the emulator: the variable pairs
//! ([`crate::Emulator::env`] and the per-source extras) and their rendering as
//! POSIX shell `export` lines.

use crate::Emulator;

fn pair(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// `KVRUN_EMULATOR_VAULT_<NAME>`: upper-cased, hyphens to underscores.
pub(crate) fn vault_var(name: &str) -> String {
    format!(
        "KVRUN_EMULATOR_VAULT_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// What `--print-env` and `--env-file` export. Deliberately absent:
/// AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE and MSI_* — each would make
/// SDKs pick a different credential than the default managed identity.
pub(crate) fn default_env(e: &Emulator) -> Vec<(String, String)> {
    let ca = e.ca_pem_path().display().to_string();
    let mut v = vec![
        pair("AZURE_POD_IDENTITY_AUTHORITY_HOST", e.imds_host()),
        pair("IDENTITY_ENDPOINT", e.identity_endpoint()),
        pair("IDENTITY_HEADER", e.identity_header()),
        pair("AZURE_AUTHORITY_HOST", e.authority_host()),
        pair("AZURE_TENANT_ID", e.tenant_id()),
        pair("SSL_CERT_FILE", ca.clone()),
        pair("REQUESTS_CA_BUNDLE", ca),
    ];
    let shared = e.shared();
    if let Some(first) = shared.vaults.first() {
        v.push(pair("KVRUN_VAULT", first.origin.clone()));
    }
    v.push(pair("KVRUN_EMULATOR_PID", std::process::id().to_string()));
    for vault in &shared.vaults {
        v.push((vault_var(&vault.name), vault.origin.clone()));
    }
    // Vaults with a DNS name of their own (`host =`) listen on 127.0.0.1: tell
    // kvrun where the name points, as DNS would.
    let resolve: Vec<String> = shared
        .vaults
        .iter()
        .filter_map(|vault| vault.host.as_ref())
        .map(|host| format!("{host}=127.0.0.1"))
        .collect();
    if !resolve.is_empty() {
        v.push(pair("KVRUN_RESOLVE", resolve.join(",")));
    }
    v
}

pub(crate) fn arc_env(e: &Emulator) -> Vec<(String, String)> {
    let s = e.shared();
    vec![
        pair(
            "IDENTITY_ENDPOINT",
            format!("{}/metadata/identity/oauth2/token", s.urls.arc),
        ),
        pair("IMDS_ENDPOINT", s.urls.arc.clone()),
    ]
}

pub(crate) fn cloud_shell_env(e: &Emulator) -> Vec<(String, String)> {
    vec![pair("MSI_ENDPOINT", e.shared().urls.cloud_shell.clone())]
}

pub(crate) fn service_fabric_env(e: &Emulator) -> Vec<(String, String)> {
    let s = e.shared();
    vec![
        pair("IDENTITY_ENDPOINT", s.urls.service_fabric.clone()),
        pair("IDENTITY_HEADER", s.identity_header.0.clone()),
        pair(
            "IDENTITY_SERVER_THUMBPRINT",
            s.service_fabric_thumbprint.clone(),
        ),
        pair("IDENTITY_API_VERSION", "2019-07-01-preview"),
    ]
}

pub(crate) fn azure_ml_env(e: &Emulator) -> Vec<(String, String)> {
    let s = e.shared();
    let mut v = vec![
        pair("MSI_ENDPOINT", s.urls.azure_ml.clone()),
        pair("MSI_SECRET", s.identity_header.0.clone()),
    ];
    if let Some(sys) = s.system_assigned() {
        v.push(pair("DEFAULT_IDENTITY_CLIENT_ID", sys.client_id.clone()));
    }
    v
}

pub(crate) fn app_service_legacy_env(e: &Emulator) -> Vec<(String, String)> {
    vec![
        pair("MSI_ENDPOINT", e.identity_endpoint()),
        pair("MSI_SECRET", e.identity_header()),
    ]
}

/// Sources whose variables [`crate::Emulator::env_for_source`] can export
/// instead of App Service's.
pub const SOURCES: [&str; 6] = [
    "imds",
    "arc",
    "cloud-shell",
    "service-fabric",
    "azure-ml",
    "app-service-legacy",
];

/// The default pairs with App Service's `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`
/// replaced by what selects `source` (SDKs test `IDENTITY_*` before
/// `MSI_*` and IMDS, so those two must go for any other source to win).
pub(crate) fn env_for_source(e: &Emulator, source: &str) -> Option<Vec<(String, String)>> {
    let extra = match source {
        "imds" => Vec::new(),
        "arc" => arc_env(e),
        "cloud-shell" => cloud_shell_env(e),
        "service-fabric" => service_fabric_env(e),
        "azure-ml" => azure_ml_env(e),
        "app-service-legacy" => app_service_legacy_env(e),
        _ => return None,
    };
    let mut v: Vec<(String, String)> = default_env(e)
        .into_iter()
        .filter(|(k, _)| k != "IDENTITY_ENDPOINT" && k != "IDENTITY_HEADER")
        .collect();
    v.extend(extra);
    Some(v)
}

/// `'...'` with every `'` written as `'\''`: safe for any byte string a POSIX
/// shell reads.
pub fn shell_quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('\'');
    for c in value.chars() {
        if c == '\'' {
            s.push_str("'\\''");
        } else {
            s.push(c);
        }
    }
    s.push('\'');
    s
}

/// `export NAME='value'` lines, one per pair.
pub fn export_lines(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_table() {
        for (input, want) in [
            ("", "''"),
            ("plain", "'plain'"),
            ("it's", "'it'\\''s'"),
            ("$HOME `x` \"y\"", "'$HOME `x` \"y\"'"),
            ("a\nb", "'a\nb'"),
        ] {
            assert_eq!(shell_quote(input), want, "{input:?}");
        }
    }

    #[test]
    fn export_line_shape() {
        let lines = export_lines(&[
            ("A".to_owned(), "x y".to_owned()),
            ("B".to_owned(), "'".to_owned()),
        ]);
        assert_eq!(lines, "export A='x y'\nexport B=''\\'''\n");
    }

    #[test]
    fn vault_var_names() {
        assert_eq!(vault_var("demo"), "KVRUN_EMULATOR_VAULT_DEMO");
        assert_eq!(vault_var("my-vault-1"), "KVRUN_EMULATOR_VAULT_MY_VAULT_1");
    }
}
