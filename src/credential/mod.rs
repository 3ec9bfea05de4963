//! Where access tokens come from: one module per credential source, and the detection
//! order that picks one.
//!
//! Automatic order (the contract's "Credentials" section; the Azure SDKs' order):
//! 1. service principal from the environment (`AZURE_TENANT_ID` + `AZURE_CLIENT_ID` +
//!    `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`);
//! 2. `AzureServicesAuthConnectionString` (the old AppAuthentication setting);
//! 3. workload identity (`AZURE_FEDERATED_TOKEN_FILE`);
//! 4. the platform's managed identity, by its variables (protocol reference §1.1):
//!    Service Fabric, App Service, Azure ML / legacy App Service, Cloud Shell, Arc,
//!    and otherwise IMDS;
//! 5. the Azure CLI — reached only when IMDS does not answer its probe.
//!
//! Tokens are asked for once per audience per run (the resolver caches them).

pub mod app_service;
pub mod arc;
pub mod azure_cli;
pub mod cloud_shell;
pub mod connection_string;
mod entra;
pub mod imds;
pub mod pkcs12;
pub mod service_fabric;
pub mod service_principal;
pub mod token_response;
pub mod workload_identity;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::{RequestBuilder, StatusCode};

use crate::cli::CredentialKind;
use crate::cloud::Cloud;
use crate::http::{self, Clients, MAX_BODY_BYTES, TransportKind};
use crate::retry::{self, Attempt, Deadline, Policy};
use crate::secret::AccessToken;
use token_response::ErrorBody;

/// The inherited environment as credential detection sees it: a variable set to the
/// empty string counts as unset, as in the Python, Go and .NET SDKs.
#[derive(Debug, Default, Clone)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_pairs(pairs: &[(OsString, OsString)]) -> Self {
        let vars = pairs
            .iter()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v.to_str()?.to_owned())))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        Self { vars }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }
}

/// A user-assigned managed identity, by one of its three ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAssigned {
    ClientId(String),
    ObjectId(String),
    ResourceId(String),
}

impl fmt::Display for UserAssigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserAssigned::ClientId(id) => write!(f, "client id {id}"),
            UserAssigned::ObjectId(id) => write!(f, "object id {id}"),
            UserAssigned::ResourceId(id) => write!(f, "resource id {id}"),
        }
    }
}

/// What the user asked for on the command line.
#[derive(Debug, Clone)]
pub struct Selection {
    pub kind: CredentialKind,
    /// From `--client-id` / `--object-id` / `--resource-id`.
    pub user_assigned: Option<UserAssigned>,
    pub cloud: Cloud,
    /// The most time selecting may take: decrypting a PKCS#12 file is the only slow
    /// part, and a hostile file could ask for millions of key-derivation rounds.
    pub budget: std::time::Duration,
}

/// What went wrong getting a token, with the source named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{credential}: {message}")]
pub struct CredentialError {
    /// The credential source, described ("App Service managed identity (IDENTITY_ENDPOINT)").
    pub credential: String,
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The source is not there (not configured, endpoint absent): a chain moves on.
    Unavailable,
    /// The configuration of the source is wrong (bad variable values, unreadable file).
    Misconfigured,
    /// The identity endpoint or Entra ID said no.
    Rejected,
    /// Transient failures until attempts or the deadline ran out.
    GaveUp,
}

impl CredentialError {
    pub fn new(source: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            credential: source.into(),
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The credential chosen for this run.
#[derive(Debug)]
pub enum Credential {
    ServicePrincipal(service_principal::ServicePrincipal),
    WorkloadIdentity(workload_identity::WorkloadIdentity),
    AppService(app_service::AppService),
    Arc(arc::Arc),
    CloudShell(cloud_shell::CloudShell),
    ServiceFabric(service_fabric::ServiceFabric),
    Imds(imds::Imds),
    AzureCli(azure_cli::AzureCli),
    /// Automatic mode past the platform checks: IMDS if it answers its probe, else the
    /// Azure CLI. The first that works is kept for the rest of the run.
    Chain(Chain),
}

#[derive(Debug)]
pub struct Chain {
    /// Sources ruled out during detection, for the "nothing available" message.
    pub ruled_out: Vec<String>,
    pub candidates: Vec<Credential>,
    chosen: OnceLock<usize>,
}

impl Credential {
    pub fn description(&self) -> String {
        match self {
            Credential::ServicePrincipal(c) => c.description(),
            Credential::WorkloadIdentity(c) => c.description(),
            Credential::AppService(c) => c.description(),
            Credential::Arc(c) => c.description(),
            Credential::CloudShell(c) => c.description(),
            Credential::ServiceFabric(c) => c.description(),
            Credential::Imds(c) => c.description(),
            Credential::AzureCli(c) => c.description(),
            Credential::Chain(chain) => match chain.chosen.get() {
                Some(&i) => chain.candidates[i].description(),
                None => chain
                    .candidates
                    .iter()
                    .map(Credential::description)
                    .collect::<Vec<_>>()
                    .join(", then "),
            },
        }
    }

    /// A token for `audience` (for example `https://vault.azure.net`).
    pub async fn get_token(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        match self {
            Credential::ServicePrincipal(c) => c.get_token(clients, deadline, audience).await,
            Credential::WorkloadIdentity(c) => c.get_token(clients, deadline, audience).await,
            Credential::AppService(c) => c.get_token(clients, deadline, audience).await,
            Credential::Arc(c) => c.get_token(clients, deadline, audience).await,
            Credential::CloudShell(c) => c.get_token(clients, deadline, audience).await,
            Credential::ServiceFabric(c) => c.get_token(deadline, audience).await,
            Credential::Imds(c) => c.get_token(clients, deadline, audience).await,
            Credential::AzureCli(c) => c.get_token(deadline, audience).await,
            Credential::Chain(chain) => chain.get_token(clients, deadline, audience).await,
        }
    }
}

impl Chain {
    async fn get_token(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        if let Some(&i) = self.chosen.get() {
            return Box::pin(self.candidates[i].get_token(clients, deadline, audience)).await;
        }
        let mut tried = self.ruled_out.clone();
        for (i, candidate) in self.candidates.iter().enumerate() {
            match Box::pin(candidate.get_token(clients, deadline, audience)).await {
                Ok(token) => {
                    let _ = self.chosen.set(i);
                    crate::info!("identity: using {}", candidate.description());
                    return Ok(token);
                }
                Err(e) if e.kind == ErrorKind::Unavailable => {
                    crate::debug!("identity: {e}");
                    tried.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Err(nothing_available(&tried))
    }
}

fn nothing_available(tried: &[String]) -> CredentialError {
    CredentialError::new(
        "identity",
        ErrorKind::Unavailable,
        format!("no credential is available; tried:\n    - {}", tried.join("\n    - ")),
    )
    .with_hint(
        "on Azure, enable a managed identity for this resource; in AKS, enable workload identity for the pod; \
         elsewhere set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or run 'az login'",
    )
}

/// What to check when a certificate does not verify.
pub(crate) const TLS_HINT: &str = "kvrun trusts the OS certificate store, replaced by SSL_CERT_FILE / SSL_CERT_DIR when set; \
     the server's certificate must chain to one of those roots, be current, and name the host";

/// Picks the credential for this run, without any network traffic except, in
/// automatic mode on a machine with no platform variables, IMDS's probe (done later,
/// on first use).
pub fn select(selection: &Selection, env: &Env) -> Result<Credential, CredentialError> {
    let user_assigned = selection.user_assigned.clone().or_else(|| {
        env.get("AZURE_CLIENT_ID")
            .map(|id| UserAssigned::ClientId(id.to_owned()))
    });
    let mut ruled_out = Vec::new();
    let kind = selection.kind;
    let auto = kind == CredentialKind::Auto;

    if auto || kind == CredentialKind::Environment {
        match service_principal::ServicePrincipal::from_env(env, selection.cloud, selection.budget)?
        {
            Some(sp) => return Ok(Credential::ServicePrincipal(sp)),
            None => ruled_out.push(service_principal::NOT_SET.to_owned()),
        }
        match connection_string::from_env(env, selection, user_assigned.as_ref())? {
            Some(credential) => return Ok(credential),
            None => ruled_out.push(connection_string::NOT_SET.to_owned()),
        }
        if kind == CredentialKind::Environment {
            return Err(nothing_available(&ruled_out));
        }
    }

    if auto || kind == CredentialKind::WorkloadIdentity {
        match workload_identity::WorkloadIdentity::from_env(env, selection.cloud)? {
            Some(wi) => return Ok(Credential::WorkloadIdentity(wi)),
            None if kind == CredentialKind::WorkloadIdentity => {
                return Err(CredentialError::new(
                    workload_identity::SOURCE,
                    ErrorKind::Unavailable,
                    "AZURE_FEDERATED_TOKEN_FILE is not set",
                )
                .with_hint("label the pod azure.workload.identity/use: \"true\" and annotate its service account with azure.workload.identity/client-id"));
            }
            None => ruled_out.push(format!(
                "{}: AZURE_FEDERATED_TOKEN_FILE is not set",
                workload_identity::SOURCE
            )),
        }
    }

    if auto || kind == CredentialKind::ManagedIdentity {
        if let Some(credential) = managed_identity_from_env(env, user_assigned.as_ref())? {
            return Ok(credential);
        }
        imds::validate_override(env)?;
        let probe = auto && !imds::overridden(env);
        let imds = Credential::Imds(imds::Imds::new(env, user_assigned.clone(), probe));
        if !auto {
            return Ok(imds);
        }
        ruled_out.push("platform managed identity: no App Service, Arc, Cloud Shell, Service Fabric or Azure ML variables".to_owned());
        return Ok(Credential::Chain(Chain {
            ruled_out,
            candidates: vec![imds, Credential::AzureCli(azure_cli::AzureCli)],
            chosen: OnceLock::new(),
        }));
    }

    Ok(Credential::AzureCli(azure_cli::AzureCli))
}

/// The platform managed identity named by environment variables, in the order of the
/// protocol reference §1.1 (`IDENTITY_*` before `MSI_*`), or None for plain IMDS.
pub fn managed_identity_from_env(
    env: &Env,
    user_assigned: Option<&UserAssigned>,
) -> Result<Option<Credential>, CredentialError> {
    if let (Some(endpoint), Some(_)) = (env.get("IDENTITY_ENDPOINT"), env.get("IDENTITY_HEADER")) {
        if env.has("IDENTITY_SERVER_THUMBPRINT") {
            return service_fabric::ServiceFabric::from_env(env, user_assigned)
                .map(|c| Some(Credential::ServiceFabric(c)));
        }
        return app_service::AppService::modern(endpoint, env, user_assigned)
            .map(|c| Some(Credential::AppService(c)));
    }
    if let Some(endpoint) = env.get("MSI_ENDPOINT") {
        return match env.get("MSI_SECRET") {
            Some(_) => app_service::AppService::legacy(endpoint, env, user_assigned)
                .map(|c| Some(Credential::AppService(c))),
            None => cloud_shell::CloudShell::new(endpoint, user_assigned)
                .map(|c| Some(Credential::CloudShell(c))),
        };
    }
    if let Some(arc) = arc::Arc::detect(env, user_assigned)? {
        return Ok(Some(Credential::Arc(arc)));
    }
    Ok(None)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Turns a final error response into a message and a hint for the user.
pub(crate) type Explain<'a> =
    dyn Fn(StatusCode, &ErrorBody) -> (String, Option<String>) + Sync + 'a;

/// How one source's token endpoint behaves, for [`fetch_token`].
pub(crate) struct Endpoint<'a> {
    pub source: &'a str,
    pub policy: Policy,
    /// Statuses worth another try (besides transport failures).
    pub retry_status: fn(StatusCode) -> bool,
    /// Turns a final error response into a message and hint for the user.
    pub explain: &'a Explain<'a>,
}

/// Statuses the managed-identity endpoints answer while they are busy or updating:
/// 408, 410 (IMDS updating, up to 70 s), 429 and 5xx. A 404 is permanent, as the
/// contract says (for App Service it means no such identity).
pub(crate) fn identity_retry_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 410 | 429) || status.is_server_error()
}

/// Transient statuses of Entra ID and Key Vault: 408, 429 and every 5xx.
pub(crate) fn service_retry_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429) || status.is_server_error()
}

/// Sends a token request built by `request` until it succeeds, fails for good, or
/// time runs out, and reads the token from the response.
pub(crate) async fn fetch_token(
    endpoint: &Endpoint<'_>,
    deadline: Deadline,
    request: impl Fn() -> RequestBuilder,
) -> Result<AccessToken, CredentialError> {
    enum Failure {
        Status(StatusCode, ErrorBody),
        Transport(String),
        Redirect(StatusCode),
        BadResponse(String),
        Tls(String),
    }
    let result = retry::run(deadline, endpoint.policy, |_| async {
        let response = match request().timeout(deadline.remaining()).send().await {
            Ok(response) => response,
            Err(e) => {
                let kind = http::classify(&e);
                if kind == TransportKind::Tls {
                    return Attempt::Fatal(Failure::Tls(http::error_chain(&e)));
                }
                return Attempt::Retry {
                    error: Failure::Transport(http::error_chain(&e)),
                    retry_after: None,
                    connect: kind == TransportKind::Connect,
                };
            }
        };
        let status = response.status();
        let retry_after = retry::retry_after(response.headers());
        if status.is_redirection() {
            return Attempt::Fatal(Failure::Redirect(status));
        }
        let body = match http::read_body(response, MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(e) => {
                return Attempt::Retry {
                    error: Failure::Transport(e.to_string()),
                    retry_after: None,
                    connect: false,
                };
            }
        };
        if status.is_success() {
            return match token_response::parse(&body, unix_now()) {
                Ok(token) => Attempt::Done(token),
                Err(e) => Attempt::Fatal(Failure::BadResponse(e.to_string())),
            };
        }
        let error = Failure::Status(status, token_response::parse_error_body(&body));
        if (endpoint.retry_status)(status) {
            Attempt::Retry {
                error,
                retry_after,
                connect: false,
            }
        } else {
            Attempt::Fatal(error)
        }
    })
    .await;
    result.map_err(|exhausted| {
        let (kind, message, hint) = match exhausted.error {
            Failure::Status(status, body) => {
                let (message, hint) = (endpoint.explain)(status, &body);
                let kind = if (endpoint.retry_status)(status) {
                    ErrorKind::GaveUp
                } else {
                    ErrorKind::Rejected
                };
                (kind, message, hint)
            }
            Failure::Transport(detail) => (ErrorKind::GaveUp, detail, None),
            Failure::Tls(detail) => (
                ErrorKind::Rejected,
                format!("TLS refused, nothing was sent: {detail}"),
                Some(TLS_HINT.to_owned()),
            ),
            Failure::Redirect(status) => (
                ErrorKind::Rejected,
                format!(
                    "the endpoint answered {status} (a redirect); kvrun does not follow redirects"
                ),
                None,
            ),
            Failure::BadResponse(detail) => (
                ErrorKind::Rejected,
                format!("unusable token response: {detail}"),
                None,
            ),
        };
        let message = if kind == ErrorKind::GaveUp {
            let why = if exhausted.deadline_hit {
                "the deadline was reached"
            } else {
                "out of attempts"
            };
            format!(
                "{message} (gave up after {} attempt{}: {why})",
                exhausted.attempts,
                if exhausted.attempts == 1 { "" } else { "s" }
            )
        } else {
            message
        };
        CredentialError {
            credential: endpoint.source.to_owned(),
            kind,
            message,
            hint,
        }
    })
}

/// `status: code: description`, from whatever the error body held.
pub(crate) fn describe_status(status: StatusCode, body: &ErrorBody) -> String {
    let mut text = format!("HTTP {}", status.as_u16());
    if let Some(code) = &body.code {
        text.push_str(&format!(" {code}"));
    }
    if let Some(description) = &body.description {
        text.push_str(&format!(": {description}"));
    }
    text
}

/// Managed-identity `resource` from an audience: the v1 resource is the audience
/// itself (a scope would have `/.default` appended).
pub(crate) fn scope_for(audience: &str) -> String {
    format!("{}/.default", audience.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        Env::from_pairs(&pairs)
    }

    fn selected(kind: CredentialKind, pairs: &[(&str, &str)]) -> Result<String, String> {
        let selection = Selection {
            kind,
            user_assigned: None,
            cloud: Cloud::Public,
            budget: std::time::Duration::from_secs(60),
        };
        select(&selection, &env(pairs))
            .map(|c| c.description())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn detection_order() {
        let sp = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ];
        let wi = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
        ];
        let app = [
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ];
        for (pairs, expected) in [
            (&sp[..], "service principal"),
            (
                &[sp[0], sp[1], sp[2], wi[2], app[0], app[1]][..],
                "service principal",
            ),
            (&wi[..], "workload identity"),
            (
                &[wi[0], wi[1], wi[2], app[0], app[1]][..],
                "workload identity",
            ),
            (&app[..], "App Service managed identity"),
            (
                &[
                    (
                        "IDENTITY_ENDPOINT",
                        "https://127.0.0.1:2377/metadata/identity/oauth2/token",
                    ),
                    app[1],
                    (
                        "IDENTITY_SERVER_THUMBPRINT",
                        "AB00000000000000000000000000000000000001",
                    ),
                ][..],
                "Service Fabric managed identity",
            ),
            (
                &[
                    ("MSI_ENDPOINT", "http://127.0.0.1:1/msi"),
                    ("MSI_SECRET", "s"),
                ][..],
                "legacy App Service / Azure ML managed identity",
            ),
            (
                &[("MSI_ENDPOINT", "http://127.0.0.1:1/oauth2/token")][..],
                "Cloud Shell",
            ),
            (
                &[
                    (
                        "IDENTITY_ENDPOINT",
                        "http://127.0.0.1:1/metadata/identity/oauth2/token",
                    ),
                    ("IMDS_ENDPOINT", "http://127.0.0.1:1"),
                ][..],
                "Azure Arc",
            ),
            (
                &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:1")][..],
                "IMDS",
            ),
            (&[][..], "IMDS"),
            (
                &[("IDENTITY_ENDPOINT", ""), ("IDENTITY_HEADER", "")][..],
                "IMDS",
            ),
        ] {
            let got = selected(CredentialKind::Auto, pairs).unwrap();
            assert!(got.contains(expected), "{pairs:?}: {got}");
        }
        let got = selected(CredentialKind::Auto, &[]).unwrap();
        assert!(got.contains("Azure CLI"), "{got}");
    }

    #[test]
    fn forced_kinds() {
        assert!(
            selected(CredentialKind::AzureCli, &[("AZURE_CLIENT_SECRET", "s")])
                .unwrap()
                .contains("Azure CLI")
        );
        assert!(
            selected(CredentialKind::ManagedIdentity, &[])
                .unwrap()
                .contains("IMDS")
        );
        let err = selected(CredentialKind::Environment, &[]).unwrap_err();
        assert!(
            err.contains("AZURE_CLIENT_SECRET")
                && err.contains("AzureServicesAuthConnectionString"),
            "{err}"
        );
        let err = selected(CredentialKind::WorkloadIdentity, &[]).unwrap_err();
        assert!(err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn incomplete_workload_identity_is_a_clear_error() {
        let err = selected(
            CredentialKind::Auto,
            &[("AZURE_FEDERATED_TOKEN_FILE", "/f")],
        )
        .unwrap_err();
        assert!(
            err.contains("AZURE_CLIENT_ID") && err.contains("AZURE_TENANT_ID"),
            "{err}"
        );
    }
}
