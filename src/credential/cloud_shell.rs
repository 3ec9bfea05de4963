//! Azure Cloud Shell (protocol reference §4.1): `MSI_ENDPOINT` without `MSI_SECRET`.
//! A form POST of `resource` with `Metadata: true`; the token is the signed-in
//! portal user's, so there is no user-assigned identity to select.

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};

use super::app_service::parse_endpoint;
use super::token_response::ErrorBody;
use super::{
    CredentialError, Endpoint, ErrorKind, UserAssigned, describe_status, fetch_token,
    identity_retry_status,
};
use crate::http::Clients;
use crate::retry::{Deadline, Policy};
use crate::secret::AccessToken;

const SOURCE: &str = "Cloud Shell managed identity (MSI_ENDPOINT)";

#[derive(Debug)]
pub struct CloudShell {
    endpoint: Url,
}

impl CloudShell {
    pub fn new(
        endpoint: &str,
        user_assigned: Option<&UserAssigned>,
    ) -> Result<Self, CredentialError> {
        if let Some(ua) = user_assigned {
            return Err(CredentialError::new(
                SOURCE,
                ErrorKind::Misconfigured,
                format!("Cloud Shell gives the signed-in user's token; a user-assigned identity ({ua}) cannot be selected"),
            )
            .with_hint("remove --client-id/--object-id/--resource-id and unset AZURE_CLIENT_ID"));
        }
        Ok(Self {
            endpoint: parse_endpoint(endpoint, "MSI_ENDPOINT", SOURCE)?,
        })
    }

    pub fn description(&self) -> String {
        SOURCE.to_owned()
    }

    pub async fn get_token(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("resource", audience)
            .finish();
        let explain = |status: StatusCode, body: &ErrorBody| (describe_status(status, body), None);
        let endpoint = Endpoint {
            source: SOURCE,
            policy: Policy::IDENTITY,
            retry_status: identity_retry_status,
            explain: &explain,
        };
        fetch_token(&endpoint, deadline, || {
            clients
                .identity
                .post(self.endpoint.clone())
                .header("Metadata", "true")
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.clone())
        })
        .await
    }
}
