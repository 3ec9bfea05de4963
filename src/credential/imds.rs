//! The Azure Instance Metadata Service: managed identity of VMs, scale sets and AKS
//! nodes (protocol reference §2).
//!
//! `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//! with `Metadata: true`; `client_id` / `object_id` / `msi_res_id` select a
//! user-assigned identity. `AZURE_POD_IDENTITY_AUTHORITY_HOST` replaces the scheme and
//! host, as in the Azure SDKs.
//!
//! In automatic mode off Azure (a laptop) nothing listens at 169.254.169.254, so
//! first a probe: one request without the `Metadata` header and a 1 s timeout. Any
//! HTTP answer means IMDS is there; no answer means "unavailable", and the Azure CLI
//! is tried next. A Docker Desktop proxy answers 403 "unreachable network": not IMDS.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::OnceCell;

use super::token_response::ErrorBody;
use super::{
    CredentialError, Endpoint, Env, ErrorKind, UserAssigned, describe_status, fetch_token,
    identity_retry_status,
};
use crate::http::Clients;
use crate::retry::{Deadline, Policy};
use crate::secret::AccessToken;

const DEFAULT_HOST: &str = "http://169.254.169.254";
const PATH: &str = "/metadata/identity/oauth2/token";
const API_VERSION: &str = "2018-02-01";
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Imds {
    base: String,
    user_assigned: Option<UserAssigned>,
    probe: bool,
    probed: OnceCell<Result<(), CredentialError>>,
}

/// Whether the IMDS address was overridden (then there is nothing to probe).
pub fn overridden(env: &Env) -> bool {
    env.has("AZURE_POD_IDENTITY_AUTHORITY_HOST")
}

/// `AZURE_POD_IDENTITY_AUTHORITY_HOST` must be a plain http(s) origin: it is shown in
/// messages, so it may not carry credentials.
pub fn validate_override(env: &Env) -> Result<(), CredentialError> {
    match env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") {
        Some(host) => super::app_service::parse_endpoint(
            host,
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            "IMDS managed identity",
        )
        .map(drop),
        None => Ok(()),
    }
}

impl Imds {
    pub fn new(env: &Env, user_assigned: Option<UserAssigned>, probe: bool) -> Self {
        let base = env
            .get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
            .map_or(DEFAULT_HOST, |h| h.trim().trim_end_matches('/'))
            .to_owned();
        Self {
            base,
            user_assigned,
            probe,
            probed: OnceCell::new(),
        }
    }

    pub fn description(&self) -> String {
        let who = match &self.user_assigned {
            Some(ua) => format!("user-assigned, {ua}"),
            None => "system-assigned".to_owned(),
        };
        format!("IMDS managed identity ({who}, {})", self.base)
    }

    fn url(&self, audience: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("api-version", API_VERSION)
            .append_pair("resource", audience);
        match &self.user_assigned {
            Some(UserAssigned::ClientId(id)) => query.append_pair("client_id", id),
            Some(UserAssigned::ObjectId(id)) => query.append_pair("object_id", id),
            Some(UserAssigned::ResourceId(id)) => query.append_pair("msi_res_id", id),
            None => &mut query,
        };
        format!("{}{PATH}?{}", self.base, query.finish())
    }

    pub async fn get_token(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        let source = self.description();
        if self.probe {
            self.probed
                .get_or_init(|| self.run_probe(clients, deadline, audience, &source))
                .await
                .clone()?;
        }
        let url = self.url(audience);
        let user_assigned = self.user_assigned.clone();
        let explain = |status: StatusCode, body: &ErrorBody| {
            let message = describe_status(status, body);
            let identity_missing = status == StatusCode::BAD_REQUEST
                && body
                    .description
                    .as_deref()
                    .is_some_and(|d| d.to_ascii_lowercase().contains("identity not found"));
            let hint = match (identity_missing, &user_assigned) {
                (true, Some(ua)) => Some(format!("no user-assigned identity with {ua} is assigned to this VM: assign it (az vm identity assign --identities <resource id>) or fix the id")),
                (true, None) => Some("this VM has no system-assigned identity: enable it (az vm identity assign) or select a user-assigned one with --client-id".to_owned()),
                _ => None,
            };
            (message, hint)
        };
        let endpoint = Endpoint {
            source: &source,
            policy: Policy::IDENTITY,
            retry_status: identity_retry_status,
            explain: &explain,
        };
        let result = fetch_token(&endpoint, deadline, || {
            clients.identity.get(&url).header("Metadata", "true")
        })
        .await;
        match result {
            // In automatic mode a VM without any identity is "not this source".
            Err(mut e)
                if self.probe
                    && self.user_assigned.is_none()
                    && e.message.contains("Identity not found") =>
            {
                e.kind = ErrorKind::Unavailable;
                Err(e)
            }
            other => other,
        }
    }

    async fn run_probe(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
        source: &str,
    ) -> Result<(), CredentialError> {
        let unavailable = |why: String| CredentialError::new(source, ErrorKind::Unavailable, why);
        let response = clients
            .identity
            .get(self.url(audience))
            .timeout(PROBE_TIMEOUT.min(deadline.remaining()))
            .send()
            .await
            .map_err(|_| {
                unavailable(format!(
                    "no answer from {} within {} s",
                    self.base,
                    PROBE_TIMEOUT.as_secs()
                ))
            })?;
        if response.status() == StatusCode::FORBIDDEN {
            let body = crate::http::read_body(response, 4096)
                .await
                .unwrap_or_default();
            if String::from_utf8_lossy(&body).contains("unreachable") {
                return Err(unavailable(
                    "a proxy (Docker Desktop) answered instead of IMDS".to_owned(),
                ));
            }
        }
        crate::debug!("identity: IMDS answered its probe");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_per_selector() {
        let env = Env::default();
        for (ua, expected) in [
            (
                None,
                "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net",
            ),
            (Some(UserAssigned::ClientId("c".into())), "&client_id=c"),
            (Some(UserAssigned::ObjectId("o".into())), "&object_id=o"),
            (
                Some(UserAssigned::ResourceId("/s/x".into())),
                "&msi_res_id=%2Fs%2Fx",
            ),
        ] {
            let url = Imds::new(&env, ua, false).url("https://vault.azure.net");
            assert!(url.ends_with(expected), "{url}");
        }
        let pairs = [(
            std::ffi::OsString::from("AZURE_POD_IDENTITY_AUTHORITY_HOST"),
            std::ffi::OsString::from("http://127.0.0.1:9/"),
        )];
        let url = Imds::new(&Env::from_pairs(&pairs), None, false).url("a");
        assert!(
            url.starts_with("http://127.0.0.1:9/metadata/identity/oauth2/token?"),
            "{url}"
        );
    }
}
