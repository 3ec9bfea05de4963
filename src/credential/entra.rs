//! The Entra ID (Azure AD) v2.0 token endpoint, shared by the service-principal and
//! workload-identity sources: client credentials with a secret or an assertion.
//!
//! `POST {authority}/{tenant}/oauth2/v2.0/token` with a form body; the answer has a
//! numeric `expires_in`. Errors carry `AADSTSnnnn` codes, which the hints below turn
//! into what to fix.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use zeroize::Zeroizing;

use super::token_response::ErrorBody;
use super::{
    CredentialError, Endpoint, Env, ErrorKind, fetch_token, scope_for, service_retry_status,
};
use crate::cloud::Cloud;
use crate::http::Clients;
use crate::retry::{Deadline, Policy};
use crate::secret::{AccessToken, SecretValue};

/// Where tokens are asked for: authority host and tenant.
#[derive(Debug, Clone)]
pub struct Authority {
    pub host: String,
    pub tenant: String,
}

impl Authority {
    /// `AZURE_AUTHORITY_HOST` (https only; a bare host gets `https://`), else the cloud's.
    pub fn from_env(
        env: &Env,
        tenant: &str,
        cloud: Cloud,
        source: &str,
    ) -> Result<Self, CredentialError> {
        let host = match env.get("AZURE_AUTHORITY_HOST") {
            Some(host) => normalize_authority_host(host).map_err(|why| {
                CredentialError::new(
                    source,
                    ErrorKind::Misconfigured,
                    format!("AZURE_AUTHORITY_HOST: {why}"),
                )
            })?,
            None => cloud.authority_host().to_owned(),
        };
        validate_tenant(tenant)
            .map_err(|why| CredentialError::new(source, ErrorKind::Misconfigured, why))?;
        Ok(Self {
            host,
            tenant: tenant.to_owned(),
        })
    }

    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.host, self.tenant)
    }
}

fn normalize_authority_host(host: &str) -> Result<String, String> {
    let host = host.trim().trim_end_matches('/');
    let with_scheme = if host.contains("://") {
        host.to_owned()
    } else {
        format!("https://{host}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| format!("not a URL: {e}"))?;
    if super::app_service::has_userinfo(&url) {
        return Err("must not contain a user name or password".to_owned());
    }
    if url.scheme() != "https" {
        return Err(format!("'{host}' must use https"));
    }
    Ok(with_scheme)
}

/// Tenant ids are GUIDs or domain names; anything else would change the URL's shape.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    if !tenant.is_empty()
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "invalid tenant id '{tenant}' (letters, digits, '.' and '-')"
        ))
    }
}

/// How the client proves who it is.
pub enum ClientAuth<'a> {
    Secret(&'a SecretValue),
    /// A signed JWT: a certificate assertion or a federated (workload identity) token.
    Assertion(&'a SecretValue),
}

pub async fn request_token(
    clients: &Clients,
    deadline: Deadline,
    source: &str,
    authority: &Authority,
    client_id: &str,
    auth: ClientAuth<'_>,
    audience: &str,
) -> Result<AccessToken, CredentialError> {
    let scope = scope_for(audience);
    let body: Zeroizing<String> = {
        // Sized up front so the buffer never reallocates (leaving copies of the secret).
        let mut form = form_urlencoded::Serializer::new(String::with_capacity(64 * 1024));
        form.append_pair("client_id", client_id)
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &scope);
        match auth {
            ClientAuth::Secret(secret) => form.append_pair("client_secret", secret.expose_secret()),
            ClientAuth::Assertion(assertion) => form
                .append_pair(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                )
                .append_pair("client_assertion", assertion.expose_secret()),
        };
        Zeroizing::new(form.finish())
    };
    let url = authority.token_url();
    let explain =
        |status: StatusCode, body: &ErrorBody| explain(status, body, authority, client_id);
    let endpoint = Endpoint {
        source,
        policy: Policy::SERVICE,
        retry_status: service_retry_status,
        explain: &explain,
    };
    fetch_token(&endpoint, deadline, || {
        clients
            .tls
            .post(&url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec())
    })
    .await
}

/// A message and a hint for an Entra error, keyed by its AADSTS code.
fn explain(
    status: StatusCode,
    body: &ErrorBody,
    authority: &Authority,
    client_id: &str,
) -> (String, Option<String>) {
    let message = super::describe_status(status, body);
    let tenant = &authority.tenant;
    let hint = match body.error_codes.first().copied() {
        Some(700_016) => Some(format!(
            "the application {client_id} was not found in tenant {tenant}: AZURE_TENANT_ID names the wrong tenant, \
             or the app is not registered (or not consented) in that tenant"
        )),
        Some(7_000_215) => Some(
            "the client secret is wrong: use the secret's Value (shown once when it was created), not its Secret ID".to_owned(),
        ),
        Some(7_000_222) => Some("the client secret has expired: create a new one on the app registration".to_owned()),
        Some(90_002) => Some(format!("tenant {tenant} does not exist: check AZURE_TENANT_ID")),
        Some(700_024) => Some(
            "the client assertion is outside its valid time range: the federated token file is stale \
             (is the projected service-account token being refreshed?) or the clock is wrong"
                .to_owned(),
        ),
        Some(70_021) => Some(format!(
            "no federated identity credential on {client_id} matches the token's issuer and subject: \
             add one for this cluster's OIDC issuer and service account"
        )),
        Some(700_027) => Some(format!(
            "the assertion's signature was not accepted: upload this certificate to the app registration {client_id}"
        )),
        Some(50_049 | 900_023) => Some(format!("tenant '{tenant}' is not a valid tenant id or domain: check AZURE_TENANT_ID")),
        _ => None,
    };
    (message, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_hosts() {
        for (input, expected) in [
            (
                "https://login.microsoftonline.com/",
                Ok("https://login.microsoftonline.com"),
            ),
            (
                "login.microsoftonline.us",
                Ok("https://login.microsoftonline.us"),
            ),
            ("https://127.0.0.1:8443", Ok("https://127.0.0.1:8443")),
            ("http://127.0.0.1:8443", Err("must use https")),
        ] {
            match (normalize_authority_host(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!("{input}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn tenants() {
        for (tenant, ok) in [
            ("72f988bf-86f1-41af-91ab-2d7cd011db47", true),
            ("contoso.onmicrosoft.com", true),
            ("", false),
            ("a/b", false),
            ("a b", false),
        ] {
            assert_eq!(validate_tenant(tenant).is_ok(), ok, "{tenant}");
        }
    }

    #[test]
    fn hints_by_code() {
        let authority = Authority {
            host: "https://login.microsoftonline.com".into(),
            tenant: "t1".into(),
        };
        let body = |code| ErrorBody {
            code: Some("x".into()),
            description: Some("AADSTS".into()),
            error_codes: vec![code],
        };
        let (_, hint) = explain(StatusCode::BAD_REQUEST, &body(700_016), &authority, "app-1");
        let hint = hint.unwrap();
        assert!(
            hint.contains("app-1") && hint.contains("t1") && hint.contains("wrong tenant"),
            "{hint}"
        );
        let (_, hint) = explain(
            StatusCode::UNAUTHORIZED,
            &body(7_000_215),
            &authority,
            "app-1",
        );
        assert!(hint.unwrap().contains("Value"));
        let (message, hint) = explain(StatusCode::BAD_REQUEST, &body(1), &authority, "app-1");
        assert_eq!((message.as_str(), hint), ("HTTP 400 x: AADSTS", None));
    }
}
