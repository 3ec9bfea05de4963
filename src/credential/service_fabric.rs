//! Service Fabric managed identity (protocol reference §4.3): `IDENTITY_ENDPOINT`,
//! `IDENTITY_HEADER` and `IDENTITY_SERVER_THUMBPRINT`. The endpoint is HTTPS with a
//! self-signed certificate, pinned by its SHA-1 thumbprint; the header goes as
//! `secret`. The identity is chosen by cluster configuration, not per request.

use reqwest::header::HeaderValue;
use reqwest::{Client, StatusCode, Url};

use super::app_service::{parse_endpoint, set_query};
use super::token_response::ErrorBody;
use super::{
    CredentialError, Endpoint, Env, ErrorKind, UserAssigned, describe_status, fetch_token,
};
use crate::http;
use crate::retry::{Deadline, Policy};
use crate::secret::{AccessToken, SecretValue};

const SOURCE: &str = "Service Fabric managed identity (IDENTITY_ENDPOINT)";
const DEFAULT_API_VERSION: &str = "2019-07-01-preview";

#[derive(Debug)]
pub struct ServiceFabric {
    endpoint: Url,
    header: SecretValue,
    api_version: String,
    client: Client,
}

impl ServiceFabric {
    pub fn from_env(
        env: &Env,
        user_assigned: Option<&UserAssigned>,
    ) -> Result<Self, CredentialError> {
        let misconfigured =
            |why: String| CredentialError::new(SOURCE, ErrorKind::Misconfigured, why);
        let endpoint = parse_endpoint(
            env.get("IDENTITY_ENDPOINT").unwrap_or_default(),
            "IDENTITY_ENDPOINT",
            SOURCE,
        )?;
        if endpoint.scheme() != "https" {
            return Err(misconfigured(
                "IDENTITY_ENDPOINT must be https for Service Fabric".to_owned(),
            ));
        }
        let thumbprint =
            parse_thumbprint(env.get("IDENTITY_SERVER_THUMBPRINT").unwrap_or_default())
                .ok_or_else(|| {
                    misconfigured(
                "IDENTITY_SERVER_THUMBPRINT is not a SHA-1 thumbprint (40 hexadecimal characters)"
                    .to_owned(),
            )
                })?;
        if let Some(ua) = user_assigned {
            crate::warn!(
                "Service Fabric chooses the identity in the cluster configuration; ignoring the user-assigned {ua}"
            );
        }
        let client = http::pinned_client(thumbprint).map_err(|e| misconfigured(e.to_string()))?;
        Ok(Self {
            endpoint,
            header: SecretValue::new(env.get("IDENTITY_HEADER").unwrap_or_default().to_owned()),
            api_version: env
                .get("IDENTITY_API_VERSION")
                .unwrap_or(DEFAULT_API_VERSION)
                .to_owned(),
            client,
        })
    }

    pub fn description(&self) -> String {
        SOURCE.to_owned()
    }

    pub async fn get_token(
        &self,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        let mut url = self.endpoint.clone();
        set_query(
            &mut url,
            &[("api-version", &self.api_version), ("resource", audience)],
        );
        let explain = |status: StatusCode, body: &ErrorBody| (describe_status(status, body), None);
        let endpoint = Endpoint {
            source: SOURCE,
            policy: Policy::IDENTITY,
            // DOC-SF: retry 429 and 5xx; 404 means no identity, which retrying will not fix.
            retry_status: |s| s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error(),
            explain: &explain,
        };
        fetch_token(&endpoint, deadline, || {
            let mut secret = HeaderValue::from_str(self.header.expose_secret())
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            secret.set_sensitive(true);
            self.client.get(url.clone()).header("secret", secret)
        })
        .await
    }
}

/// 40 hex digits, with `:` or spaces allowed between them.
fn parse_thumbprint(text: &str) -> Option<[u8; 20]> {
    let hex: Vec<u8> = text.bytes().filter(|b| !matches!(b, b':' | b' ')).collect();
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints() {
        let mut expected = [0u8; 20];
        expected[0] = 0xab;
        expected[19] = 0x01;
        for (text, ok) in [
            ("AB00000000000000000000000000000000000001", true),
            (
                "ab:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01",
                true,
            ),
            ("AB0000000000000000000000000000000000000", false),
            ("ZZ00000000000000000000000000000000000001", false),
        ] {
            assert_eq!(parse_thumbprint(text), ok.then_some(expected), "{text}");
        }
    }
}
