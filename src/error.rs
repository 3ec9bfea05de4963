//! kvrun's top-level error, the exit status of each case, and how failures are shown:
//! one line per failing variable naming the vault, the secret and the cause, then a
//! hint saying what to fix. Never a value or a token: the types that hold those have
//! no `Display`, so they cannot be formatted here.

#![allow(
    clippy::print_stderr,
    reason = "this module renders kvrun's errors on stderr"
)]

use std::collections::{BTreeMap, HashMap};

use crate::child_env::NulInValue;
use crate::config::{ConfigError, SecretId};
use crate::credential::CredentialError;
use crate::exec::ExecError;
use crate::keyvault::FetchError;
use crate::reference::VaultUrl;
use crate::secret::TokenClaims;

/// Exit status when kvrun itself fails (usage, config, identity, vault, network).
pub const EXIT_KVRUN_FAILED: i32 = 125;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Config(ConfigError),
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Credential(CredentialError),
    #[error("{} secret{} could not be resolved", .0.failures.len(), if .0.failures.len() == 1 { "" } else { "s" })]
    Secrets(Box<SecretsFailed>),
    #[error("{0}")]
    ChildEnv(NulInValue),
    #[error("{0}")]
    Exec(ExecError),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec(e) => e.exit_code,
            _ => EXIT_KVRUN_FAILED,
        }
    }
}

/// One variable whose secret could not be had.
#[derive(Debug)]
pub struct SecretFailure {
    pub var: String,
    pub secret: SecretId,
    pub error: FetchError,
}

/// All failing variables of a run, with what is known about the identity used.
#[derive(Debug, Default)]
pub struct SecretsFailed {
    pub failures: Vec<SecretFailure>,
    pub identities: HashMap<VaultUrl, TokenClaims>,
    pub challenge_tenants: HashMap<VaultUrl, String>,
}

/// One rendered problem: the line, and an optional hint.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub message: String,
    pub hint: Option<String>,
}

/// Writes the error to stderr, as text or JSON lines per the log format.
pub fn report(error: &Error) {
    let lines = render(error);
    let json = crate::log::json_format();
    let mut out = String::new();
    for line in &lines {
        if json {
            let object =
                serde_json::json!({"level": "error", "message": line.message, "hint": line.hint});
            out.push_str(&format!("{object}\n"));
        } else {
            out.push_str(&format!("kvrun: error: {}\n", line.message));
            if let Some(hint) = &line.hint {
                out.push_str(&format!("  hint: {hint}\n"));
            }
        }
    }
    eprint!("{out}");
}

pub fn render(error: &Error) -> Vec<Line> {
    match error {
        Error::Config(e) => e.problems.iter().map(|p| Line { message: p.clone(), hint: None }).collect(),
        Error::Credential(e) => vec![credential_line(e, None)],
        Error::Secrets(failed) => render_secrets(failed),
        Error::Usage(message) => vec![Line { message: message.clone(), hint: Some("usage: kvrun [OPTIONS] [--] COMMAND [ARGS...]; see kvrun --help".to_owned()) }],
        Error::Setup(message) if message.contains("HTTP") => vec![Line {
            message: message.clone(),
            hint: Some("kvrun trusts the OS certificate store, replaced by SSL_CERT_FILE / SSL_CERT_DIR when set: check those".to_owned()),
        }],
        other => vec![Line { message: other.to_string(), hint: None }],
    }
}

fn credential_line(error: &CredentialError, affected: Option<&[&str]>) -> Line {
    let mut message = format!(
        "no access token from {}: {}",
        error.credential, error.message
    );
    if let Some(vars) = affected {
        message.push_str(&format!(" (needed for {})", vars.join(", ")));
    }
    Line {
        message,
        hint: error.hint.clone(),
    }
}

fn render_secrets(failed: &SecretsFailed) -> Vec<Line> {
    let mut lines = Vec::new();
    // A token failure is one problem, however many variables it stops: say it once.
    let mut token_failures: BTreeMap<String, (&CredentialError, Vec<&str>)> = BTreeMap::new();
    for failure in &failed.failures {
        if let FetchError::Token(e) = &failure.error {
            token_failures
                .entry(e.to_string())
                .or_insert((e, Vec::new()))
                .1
                .push(&failure.var);
        }
    }
    for (error, vars) in token_failures.values() {
        lines.push(credential_line(error, Some(vars)));
    }
    for failure in failed
        .failures
        .iter()
        .filter(|f| !matches!(f.error, FetchError::Token(_)))
    {
        let secret = &failure.secret;
        let version = secret
            .version
            .as_deref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default();
        let cause = match &failure.error {
            FetchError::Status {
                message: Some(m),
                request_id,
                ..
            } if !m.is_empty() => {
                let id = request_id
                    .as_deref()
                    .map(|r| format!(", request id {r}"))
                    .unwrap_or_default();
                format!("{}: {m}{id}", failure.error)
            }
            other => other.to_string(),
        };
        lines.push(Line {
            message: format!(
                "{}: vault {}, secret {}{version}: {cause}",
                failure.var, secret.vault, secret.name
            ),
            hint: hint(failure, failed),
        });
    }
    lines
}

/// What to do about a Key Vault refusal, naming the identity when the token said.
fn hint(failure: &SecretFailure, failed: &SecretsFailed) -> Option<String> {
    let secret = &failure.secret;
    let vault = &secret.vault;
    // `az` names a vault by its short name, which only a known cloud's host carries.
    let vault_name = match crate::cloud::known_audience(vault.host()) {
        Some(_) => vault.host().split('.').next().unwrap_or(vault.host()),
        None => "<vault name>",
    };
    let claims = failed.identities.get(vault).cloned().unwrap_or_default();
    let who = match (&claims.app_id, &claims.object_id) {
        (Some(app), Some(oid)) => format!("the identity (client id {app}, object id {oid})"),
        (None, Some(oid)) => format!("the identity (object id {oid})"),
        (Some(app), None) => format!("the identity (client id {app})"),
        (None, None) => "the identity kvrun used".to_owned(),
    };
    let object_id = claims.object_id.as_deref().unwrap_or("<object id>");
    let FetchError::Status {
        status,
        code,
        inner,
        ..
    } = &failure.error
    else {
        return match &failure.error {
            FetchError::Tls(_) => Some(crate::credential::TLS_HINT.to_owned()),
            FetchError::ValueHasNul => Some("store the value without NUL bytes (base64-encode binary data)".to_owned()),
            FetchError::DeadlineExceeded | FetchError::GaveUp { deadline_hit: true, .. } => {
                Some("the vault or network is slow or throttling: raise --timeout, or check connectivity to the vault".to_owned())
            }
            _ => None,
        };
    };
    let inner = inner.as_deref().or(code.as_deref()).unwrap_or("");
    Some(match (*status, inner) {
        (404, _) => match &secret.version {
            Some(v) => format!("vault {vault} has no version {v} of '{}': check the version, or drop it to use the latest", secret.name),
            None => format!(
                "vault {vault} has no secret '{}': check the name and the vault; a deleted secret can be recovered with \
                 'az keyvault secret recover --vault-name {vault_name} --name {}'",
                secret.name, secret.name
            ),
        },
        (403, "SecretDisabled") => format!(
            "the secret is disabled: enable it ('az keyvault secret set-attributes --vault-name {vault_name} --name {} --enabled true') or mark the entry optional",
            secret.name
        ),
        (403, "ForbiddenByRbac") => format!(
            "grant {who} the role 'Key Vault Secrets User' on the vault: \
             az role assignment create --role \"Key Vault Secrets User\" --assignee-object-id {object_id} \
             --assignee-principal-type ServicePrincipal --scope $(az keyvault show --name {vault_name} --query id -o tsv)"
        ),
        (403, "AccessDenied" | "ForbiddenByPolicy") => format!(
            "the vault uses access policies: give {who} the 'get' secret permission: \
             az keyvault set-policy --name {vault_name} --object-id {object_id} --secret-permissions get"
        ),
        (403, "ForbiddenByFirewall") => format!(
            "the vault's firewall does not admit this network: add it ('az keyvault network-rule add --name {vault_name} ...') or reach the vault through its private endpoint"
        ),
        (403, _) => format!("the vault refused {who}: grant it read access to secrets (role 'Key Vault Secrets User', or an access policy with 'get')"),
        (401, _) => match failed.challenge_tenants.get(vault) {
            Some(tenant) => format!("the vault refused the token: the vault belongs to tenant {tenant}; check that the identity is in that tenant (AZURE_TENANT_ID)"),
            None => "the vault refused the token: check that the identity belongs to the vault's tenant (AZURE_TENANT_ID)".to_owned(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Cloud;
    use crate::credential::ErrorKind;

    fn id(name: &str) -> SecretId {
        SecretId {
            vault: VaultUrl::parse("myvault", Cloud::Public).unwrap(),
            name: name.into(),
            version: None,
        }
    }

    fn status(status: u16, inner: Option<&str>) -> FetchError {
        FetchError::Status {
            status,
            code: Some("Forbidden".into()),
            inner: inner.map(Into::into),
            message: Some("Caller is not authorized".into()),
            request_id: Some("req-1".into()),
        }
    }

    #[test]
    fn one_line_per_variable_with_hints_and_one_line_per_token_failure() {
        let mut failed = SecretsFailed::default();
        let vault = id("x").vault;
        failed.identities.insert(
            vault,
            TokenClaims {
                app_id: Some("app-1".into()),
                object_id: Some("oid-1".into()),
                ..Default::default()
            },
        );
        let token_error =
            CredentialError::new("IMDS", ErrorKind::Rejected, "HTTP 400").with_hint("enable it");
        failed.failures = vec![
            SecretFailure {
                var: "A".into(),
                secret: id("a"),
                error: status(403, Some("ForbiddenByRbac")),
            },
            SecretFailure {
                var: "B".into(),
                secret: id("b"),
                error: status(404, None),
            },
            SecretFailure {
                var: "C".into(),
                secret: id("c"),
                error: FetchError::Token(token_error.clone()),
            },
            SecretFailure {
                var: "D".into(),
                secret: id("d"),
                error: FetchError::Token(token_error),
            },
        ];
        let lines = render(&Error::Secrets(Box::new(failed)));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines[0].message,
            "no access token from IMDS: HTTP 400 (needed for C, D)"
        );
        assert_eq!(
            lines[1].message,
            "A: vault https://myvault.vault.azure.net, secret a: HTTP 403 Forbidden/ForbiddenByRbac: Caller is not authorized, request id req-1"
        );
        let rbac = lines[1].hint.as_deref().unwrap();
        assert!(
            rbac.contains("Key Vault Secrets User")
                && rbac.contains("oid-1")
                && rbac.contains("app-1"),
            "{rbac}"
        );
        assert!(
            lines[2]
                .message
                .starts_with("B: vault https://myvault.vault.azure.net, secret b: HTTP 404")
        );
        assert!(
            lines[2]
                .hint
                .as_deref()
                .unwrap()
                .contains("has no secret 'b'")
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 125);
        assert_eq!(
            Error::Exec(ExecError {
                program: "p".into(),
                reason: "r".into(),
                exit_code: 127
            })
            .exit_code(),
            127
        );
    }
}
