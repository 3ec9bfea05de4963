//! `AzureServicesAuthConnectionString`, the setting of the old .NET AppAuthentication
//! library (protocol reference §8), mapped onto kvrun's own sources:
//!
//! | connection string                                        | kvrun source                 |
//! |----------------------------------------------------------|------------------------------|
//! | `RunAs=Developer;DeveloperTool=AzureCli`                 | Azure CLI                    |
//! | `RunAs=App`                                              | managed identity (system)    |
//! | `RunAs=App;AppId=<client id>`                            | managed identity (user)      |
//! | `RunAs=App;AppId=..;TenantId=..;AppKey=..`               | service principal, secret    |
//! | certificate-store, Visual Studio and CurrentUser forms   | refused: Windows-only        |
//! | `RunAs=App;AppId=..;KeyVaultCertificateSecretIdentifier=..` | service principal, certificate read from Key Vault with the managed identity |
//!
//! Grammar (DbConnectionString): `Key=Value` pairs split by `;`, keys
//! case-insensitive, whitespace trimmed, values optionally quoted with `"` or `'` (a
//! doubled quote inside escapes it), `==` in a key is a literal `=`, a repeated key is
//! an error.

use std::collections::HashMap;

use super::{
    Credential, CredentialError, Env, ErrorKind, Selection, UserAssigned, azure_cli, imds,
    managed_identity_from_env, service_principal,
};
use crate::config::SecretId;
use crate::reference::{self, Origin};
use crate::secret::SecretValue;

pub const VARIABLE: &str = "AzureServicesAuthConnectionString";
pub const NOT_SET: &str = "AzureServicesAuthConnectionString: not set";
const SOURCE: &str = "AzureServicesAuthConnectionString";

/// The credential the connection string names, or None when it is not set.
pub fn from_env(
    env: &Env,
    selection: &Selection,
    user_assigned: Option<&UserAssigned>,
) -> Result<Option<Credential>, CredentialError> {
    let Some(text) = env.get(VARIABLE) else {
        return Ok(None);
    };
    let invalid = |why: String| CredentialError::new(SOURCE, ErrorKind::Misconfigured, why);
    let pairs = parse(text).map_err(invalid)?;
    let get = |key: &str| pairs.get(key).map(String::as_str);
    let run_as = get("runas").ok_or_else(|| {
        invalid("RunAs is missing (expected RunAs=App or RunAs=Developer)".to_owned())
    })?;
    match run_as.to_ascii_lowercase().as_str() {
        "developer" => match get("developertool").map(str::to_ascii_lowercase).as_deref() {
            Some("azurecli") => Ok(Some(Credential::AzureCli(azure_cli::AzureCli))),
            Some("visualstudio") => Err(invalid("DeveloperTool=VisualStudio uses Visual Studio's token provider, which exists only on Windows; use DeveloperTool=AzureCli and 'az login'".to_owned())),
            Some(other) => Err(invalid(format!("unknown DeveloperTool '{other}' (expected AzureCli)"))),
            None => Err(invalid("RunAs=Developer needs DeveloperTool=AzureCli".to_owned())),
        },
        "currentuser" => Err(invalid("RunAs=CurrentUser is Integrated Windows Authentication (.NET Framework only); use RunAs=Developer;DeveloperTool=AzureCli".to_owned())),
        "app" => app(env, selection, user_assigned, &pairs).map(Some),
        other => Err(invalid(format!("unknown RunAs '{other}' (expected App, Developer or CurrentUser)"))),
    }
}

fn app(
    env: &Env,
    selection: &Selection,
    user_assigned: Option<&UserAssigned>,
    pairs: &HashMap<String, String>,
) -> Result<Credential, CredentialError> {
    let get = |key: &str| pairs.get(key).map(String::as_str);
    let invalid =
        |why: &str| CredentialError::new(SOURCE, ErrorKind::Misconfigured, why.to_owned());
    if let Some(timeout) = get("msiretrytimeout") {
        timeout
            .parse::<u32>()
            .map_err(|_| invalid("MsiRetryTimeout must be a whole number of seconds"))?;
    }
    if [
        "certificatethumbprint",
        "certificatesubjectname",
        "certificatestorelocation",
    ]
    .iter()
    .any(|k| get(k).is_some())
    {
        return Err(invalid(
            "certificates from the Windows certificate store cannot be read here; \
             set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_CERTIFICATE_PATH (a PEM file) instead",
        ));
    }
    let Some(app_id) = get("appid") else {
        if get("keyvaultcertificatesecretidentifier").is_some() {
            return Err(invalid(
                "KeyVaultCertificateSecretIdentifier needs AppId (the application the certificate belongs to)",
            ));
        }
        return managed_identity(env, None);
    };
    if let Some(uri) = get("keyvaultcertificatesecretidentifier") {
        let parsed = reference::parse(uri, Origin::Mapping, selection.cloud)
            .map_err(|e| invalid(&format!("KeyVaultCertificateSecretIdentifier: {e}")))?
            .filter(|p| p.vault.is_some())
            .ok_or_else(|| invalid("KeyVaultCertificateSecretIdentifier must be a secret URI (https://VAULT/secrets/NAME)"))?;
        let Some(vault) = parsed.vault else {
            return Err(invalid(
                "KeyVaultCertificateSecretIdentifier must name a vault",
            ));
        };
        let tenant = get("tenantid")
            .or_else(|| env.get("AZURE_TENANT_ID"))
            .ok_or_else(|| {
                invalid("KeyVaultCertificateSecretIdentifier needs TenantId (or AZURE_TENANT_ID)")
            })?;
        // The certificate is read with the machine's own (system-assigned) identity,
        // as AppAuthentication does; a user-assigned one if the flags name it.
        let bootstrap = managed_identity(env, selection.user_assigned.clone())?;
        let secret = SecretId {
            vault,
            name: parsed.name,
            version: parsed.version,
        };
        return service_principal::ServicePrincipal::with_key_vault_certificate(
            env,
            selection.cloud,
            tenant,
            app_id,
            secret,
            bootstrap,
            SOURCE,
        )
        .map(Credential::ServicePrincipal);
    }
    match (get("appkey"), get("tenantid")) {
        (Some(key), Some(tenant)) => service_principal::ServicePrincipal::with_secret(
            env,
            selection.cloud,
            tenant,
            app_id,
            SecretValue::new(key.to_owned()),
            SOURCE,
        )
        .map(Credential::ServicePrincipal),
        (Some(_), None) => Err(invalid("AppKey needs TenantId")),
        (None, _) => {
            if user_assigned.is_some_and(|ua| *ua != UserAssigned::ClientId(app_id.to_owned()))
                && selection.user_assigned.is_some()
            {
                return Err(invalid(
                    "AppId names a user-assigned identity and so does --client-id/--object-id/--resource-id: give one",
                ));
            }
            managed_identity(env, Some(UserAssigned::ClientId(app_id.to_owned())))
        }
    }
}

fn managed_identity(
    env: &Env,
    user_assigned: Option<UserAssigned>,
) -> Result<Credential, CredentialError> {
    imds::validate_override(env)?;
    if let Some(credential) = managed_identity_from_env(env, user_assigned.as_ref())? {
        return Ok(credential);
    }
    Ok(Credential::Imds(imds::Imds::new(env, user_assigned, false)))
}

/// Every key kvrun knows. Parse errors name a key only when it is one of these:
/// anything else may be the tail of an unquoted secret (`AppKey=abc;def`).
const KNOWN_KEYS: &[&str] = &[
    "runas",
    "developertool",
    "appid",
    "appkey",
    "tenantid",
    "certificatethumbprint",
    "certificatesubjectname",
    "certificatestorelocation",
    "keyvaultcertificatesecretidentifier",
    "msiretrytimeout",
];

fn shown(key: &str, pair: usize) -> String {
    if KNOWN_KEYS.contains(&key) {
        format!("'{key}'")
    } else {
        format!("pair {pair}")
    }
}

/// Parses the DbConnectionString-style text into lower-cased keys and values.
/// Errors never quote the text: values hold secrets, and an unquoted `;` inside
/// one makes the rest of it look like a key.
pub fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    if text.trim().is_empty() {
        return Err("the connection string is empty".to_owned());
    }
    let mut pairs = HashMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        // Key: up to a single '=' ("==" is a literal '=').
        let mut key = String::new();
        let mut chars = rest.char_indices().peekable();
        let value_start = loop {
            match chars.next() {
                Some((i, '=')) => {
                    if let Some(&(_, '=')) = chars.peek() {
                        chars.next();
                        key.push('=');
                    } else {
                        break i + 1;
                    }
                }
                Some((_, ';')) | None => {
                    return Err(format!(
                        "{} is not Key=Value (a ';' inside a value must be quoted)",
                        shown(&key.trim().to_ascii_lowercase(), pairs.len() + 1)
                    ));
                }
                Some((_, c)) => key.push(c),
            }
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err("a pair has no key".to_owned());
        }
        let after = rest[value_start..].trim_start();
        let (value, remaining) = match after.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let mut value = String::new();
                let mut iter = after.char_indices().skip(1).peekable();
                let end = loop {
                    match iter.next() {
                        Some((i, c)) if c == quote => {
                            if iter.peek().is_some_and(|&(_, next)| next == quote) {
                                iter.next();
                                value.push(quote);
                                continue;
                            }
                            break i + 1;
                        }
                        Some((_, c)) => value.push(c),
                        None => {
                            return Err(format!(
                                "the value of {} has no closing quote",
                                shown(&key, pairs.len() + 1)
                            ));
                        }
                    }
                };
                let tail = after[end..].trim_start();
                if !(tail.is_empty() || tail.starts_with(';')) {
                    return Err(format!(
                        "unexpected text after the quoted value of {}",
                        shown(&key, pairs.len() + 1)
                    ));
                }
                (value, tail)
            }
            _ => {
                let end = after.find(';').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            }
        };
        if pairs.insert(key.clone(), value).is_some() {
            return Err(format!("Key {} is repeated", shown(&key, pairs.len() + 1)));
        }
        rest = remaining;
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CredentialKind;
    use crate::cloud::Cloud;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn grammar() {
        for (text, expected) in [
            ("RunAs=App", Ok(map(&[("runas", "App")]))),
            (
                "RunAs=Developer; DeveloperTool=AzureCli",
                Ok(map(&[
                    ("runas", "Developer"),
                    ("developertool", "AzureCli"),
                ])),
            ),
            (
                " ;runas = App ; AppId = abc ;; ",
                Ok(map(&[("runas", "App"), ("appid", "abc")])),
            ),
            (
                "RunAs=App;AppKey=\"a;b\"\"c\"",
                Ok(map(&[("runas", "App"), ("appkey", "a;b\"c")])),
            ),
            (
                "RunAs=App;AppKey='x=y'",
                Ok(map(&[("runas", "App"), ("appkey", "x=y")])),
            ),
            ("a==b=c", Ok(map(&[("a=b", "c")]))),
            ("", Err("empty")),
            ("RunAs", Err("'runas' is not Key=Value")),
            // The tail of an unquoted secret is never echoed.
            (
                "RunAs=App;AppId=a;TenantId=t;AppKey=abc;SECRETTAIL",
                Err("pair 5 is not Key=Value"),
            ),
            ("RunAs=App;runas=Developer", Err("repeated")),
            ("RunAs=App;AppKey=\"open", Err("no closing quote")),
            ("=x", Err("no key")),
        ] {
            match (parse(text), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
    }

    fn credential(connection_string: &str) -> Result<String, String> {
        let pairs = [(
            std::ffi::OsString::from(VARIABLE),
            std::ffi::OsString::from(connection_string),
        )];
        let selection = Selection {
            kind: CredentialKind::Auto,
            user_assigned: None,
            cloud: Cloud::Public,
            budget: std::time::Duration::from_secs(60),
        };
        from_env(&Env::from_pairs(&pairs), &selection, None)
            .map(|c| c.unwrap().description())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn forms() {
        for (text, expected) in [
            ("RunAs=Developer;DeveloperTool=AzureCli", Ok("Azure CLI")),
            ("RunAs=App", Ok("IMDS managed identity (system-assigned")),
            (
                "RunAs=App;AppId=11111111-2222",
                Ok("client id 11111111-2222"),
            ),
            (
                "RunAs=App;AppId=app;TenantId=t;AppKey=k",
                Ok("service principal app (client secret, from AzureServicesAuthConnectionString)"),
            ),
            ("RunAs=App;AppId=app;AppKey=k", Err("AppKey needs TenantId")),
            (
                "RunAs=App;AppId=app;TenantId=t;CertificateThumbprint=AB;CertificateStoreLocation=CurrentUser",
                Err("Windows certificate store"),
            ),
            (
                "RunAs=App;AppId=app;TenantId=t;KeyVaultCertificateSecretIdentifier=https://myvault.vault.azure.net/secrets/c",
                Ok("certificate https://myvault.vault.azure.net/secrets/c read with IMDS"),
            ),
            (
                "RunAs=App;AppId=app;KeyVaultCertificateSecretIdentifier=https://myvault.vault.azure.net/secrets/c",
                Err("needs TenantId"),
            ),
            (
                "RunAs=App;KeyVaultCertificateSecretIdentifier=https://myvault.vault.azure.net/secrets/c",
                Err("needs AppId"),
            ),
            (
                "RunAs=App;AppId=app;TenantId=t;KeyVaultCertificateSecretIdentifier=keyvault://myvault",
                Err("KeyVaultCertificateSecretIdentifier:"),
            ),
            ("RunAs=CurrentUser", Err("Integrated Windows")),
            (
                "RunAs=Developer;DeveloperTool=VisualStudio",
                Err("only on Windows"),
            ),
            ("RunAs=Robot", Err("unknown RunAs")),
            ("AppId=x", Err("RunAs is missing")),
            ("RunAs=App;MsiRetryTimeout=soon", Err("MsiRetryTimeout")),
        ] {
            match (credential(text), expected) {
                (Ok(got), Ok(want)) => assert!(got.contains(want), "{text}: {got}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
    }
}
