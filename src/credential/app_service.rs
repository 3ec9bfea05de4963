//! App Service, Functions and Container Apps managed identity (protocol reference §3),
//! and the 2017-09-01 protocol shared by legacy App Service and Azure ML (§3.2, §4.4).
//!
//! - 2019-08-01: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, header `X-IDENTITY-HEADER`,
//!   selectors `client_id` / `principal_id` / `mi_res_id`.
//! - 2017-09-01: `MSI_ENDPOINT` + `MSI_SECRET`, header `secret`, selector `clientid`
//!   only; Azure ML's system identity is asked for by `DEFAULT_IDENTITY_CLIENT_ID`.

use reqwest::{StatusCode, Url};

use super::token_response::ErrorBody;
use super::{
    CredentialError, Endpoint, Env, ErrorKind, UserAssigned, describe_status, fetch_token,
    identity_retry_status,
};
use crate::http::Clients;
use crate::retry::{Deadline, Policy};
use crate::secret::{AccessToken, SecretValue};

#[derive(Debug)]
pub struct AppService {
    endpoint: Url,
    header: &'static str,
    secret: SecretValue,
    api_version: &'static str,
    selector: Option<(&'static str, String)>,
    description: String,
}

impl AppService {
    pub fn modern(
        endpoint: &str,
        env: &Env,
        user_assigned: Option<&UserAssigned>,
    ) -> Result<Self, CredentialError> {
        let description = "App Service managed identity (IDENTITY_ENDPOINT)".to_owned();
        let endpoint = parse_endpoint(endpoint, "IDENTITY_ENDPOINT", &description)?;
        let selector = user_assigned.map(|ua| match ua {
            UserAssigned::ClientId(id) => ("client_id", id.clone()),
            UserAssigned::ObjectId(id) => ("principal_id", id.clone()),
            UserAssigned::ResourceId(id) => ("mi_res_id", id.clone()),
        });
        let secret = SecretValue::new(env.get("IDENTITY_HEADER").unwrap_or_default().to_owned());
        Ok(Self {
            endpoint,
            header: "X-IDENTITY-HEADER",
            secret,
            api_version: "2019-08-01",
            selector,
            description,
        })
    }

    pub fn legacy(
        endpoint: &str,
        env: &Env,
        user_assigned: Option<&UserAssigned>,
    ) -> Result<Self, CredentialError> {
        let description =
            "legacy App Service / Azure ML managed identity (MSI_ENDPOINT)".to_owned();
        let endpoint = parse_endpoint(endpoint, "MSI_ENDPOINT", &description)?;
        let selector = match user_assigned {
            Some(UserAssigned::ClientId(id)) => Some(("clientid", id.clone())),
            Some(other) => {
                return Err(CredentialError::new(
                    &description,
                    ErrorKind::Misconfigured,
                    format!(
                        "the 2017-09-01 protocol selects a user-assigned identity by client id only, not by {other}"
                    ),
                ));
            }
            None => env
                .get("DEFAULT_IDENTITY_CLIENT_ID")
                .map(|id| ("clientid", id.to_owned())),
        };
        let secret = SecretValue::new(env.get("MSI_SECRET").unwrap_or_default().to_owned());
        Ok(Self {
            endpoint,
            header: "secret",
            secret,
            api_version: "2017-09-01",
            selector,
            description,
        })
    }

    pub fn description(&self) -> String {
        self.description.clone()
    }

    pub async fn get_token(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        let mut url = self.endpoint.clone();
        set_query(
            &mut url,
            &[("api-version", self.api_version), ("resource", audience)],
        );
        if let Some((name, value)) = &self.selector {
            set_query(&mut url, &[(name, value)]);
        }
        let selector = self
            .selector
            .as_ref()
            .map(|(name, value)| format!("{name}={value}"));
        let explain = |status: StatusCode, body: &ErrorBody| {
            let message = describe_status(status, body);
            let about_header = body
                .description
                .as_deref()
                .is_some_and(|d| d.to_ascii_lowercase().contains("header"));
            let hint = match (status.as_u16(), &selector) {
                (400 | 401 | 403, _) if about_header => Some(format!(
                    "the endpoint refused the {} header: IDENTITY_HEADER / MSI_SECRET must be the values the platform set",
                    self.header
                )),
                (400 | 404, Some(selector)) => Some(format!("no user-assigned identity matches {selector}: add it to the app (Identity > User assigned) or fix the id")),
                (400 | 404, None) => Some("turn on the system-assigned identity of the app (Identity > System assigned), or select a user-assigned one with --client-id".to_owned()),
                (401 | 403, _) => Some(format!("the endpoint refused the {} header: IDENTITY_HEADER / MSI_SECRET must be the values the platform set", self.header)),
                _ => None,
            };
            (message, hint)
        };
        let endpoint = Endpoint {
            source: &self.description,
            policy: Policy::IDENTITY,
            retry_status: identity_retry_status,
            explain: &explain,
        };
        fetch_token(&endpoint, deadline, || {
            let mut header = reqwest::header::HeaderValue::from_str(self.secret.expose_secret())
                .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
            header.set_sensitive(true);
            clients
                .identity
                .get(url.clone())
                .header(self.header, header)
        })
        .await
    }
}

pub(crate) fn parse_endpoint(
    endpoint: &str,
    variable: &str,
    source: &str,
) -> Result<Url, CredentialError> {
    // An unparsable value is not echoed either: it may hold credentials.
    let url = Url::parse(endpoint.trim()).map_err(|e| {
        CredentialError::new(
            source,
            ErrorKind::Misconfigured,
            format!("{variable} is not a URL: {e}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CredentialError::new(
            source,
            ErrorKind::Misconfigured,
            format!("{variable} '{endpoint}' is not an http(s) URL"),
        ));
    }
    if has_userinfo(&url) {
        // Not echoed: the endpoint carries a password.
        return Err(CredentialError::new(
            source,
            ErrorKind::Misconfigured,
            format!("{variable} must not contain a user name or password"),
        ));
    }
    Ok(url)
}

/// `user:password@` in a URL, which would otherwise be shown in messages.
pub(crate) fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// Sets query parameters, replacing any of the same name already in the endpoint (an
/// `api-version` sent twice is a 404 on some platforms).
pub(crate) fn set_query(url: &mut Url, params: &[(&str, &str)]) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !params.iter().any(|(name, _)| name == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (k, v) in &kept {
        pairs.append_pair(k, v);
    }
    for (k, v) in params {
        pairs.append_pair(k, v);
    }
    drop(pairs);
    if url.query() == Some("") {
        url.set_query(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_merged_not_duplicated() {
        for (endpoint, expected) in [
            (
                "http://127.0.0.1:41566/msi/token",
                "http://127.0.0.1:41566/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net",
            ),
            (
                "http://127.0.0.1:41566/msi/token/?api-version=1.0&x=1",
                "http://127.0.0.1:41566/msi/token/?x=1&api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net",
            ),
        ] {
            let mut url = Url::parse(endpoint).unwrap();
            set_query(
                &mut url,
                &[
                    ("api-version", "2019-08-01"),
                    ("resource", "https://vault.azure.net"),
                ],
            );
            assert_eq!(url.as_str(), expected);
        }
    }

    #[test]
    fn selectors_per_protocol() {
        let env = Env::default();
        let ua = UserAssigned::ObjectId("o".into());
        assert_eq!(
            AppService::modern("http://h/t", &env, Some(&ua))
                .unwrap()
                .selector,
            Some(("principal_id", "o".into()))
        );
        let ua = UserAssigned::ResourceId("/r".into());
        assert_eq!(
            AppService::modern("http://h/t", &env, Some(&ua))
                .unwrap()
                .selector,
            Some(("mi_res_id", "/r".into()))
        );
        assert!(AppService::legacy("http://h/t", &env, Some(&ua)).is_err());
        let ua = UserAssigned::ClientId("c".into());
        assert_eq!(
            AppService::legacy("http://h/t", &env, Some(&ua))
                .unwrap()
                .selector,
            Some(("clientid", "c".into()))
        );
        assert!(AppService::modern("ftp://h/t", &env, None).is_err());
    }
}
