//! AKS workload identity: exchange the projected service-account token in
//! `AZURE_FEDERATED_TOKEN_FILE` for an Entra ID token of `AZURE_CLIENT_ID` in
//! `AZURE_TENANT_ID` (protocol reference §5).
//!
//! The file is read again for every token request: Kubernetes rotates it, and a
//! short-lived process reading it once per audience costs nothing.

use std::path::PathBuf;

use super::entra::{self, Authority, ClientAuth};
use super::{CredentialError, Env, ErrorKind};
use crate::cloud::Cloud;
use crate::http::Clients;
use crate::retry::Deadline;
use crate::secret::{AccessToken, SecretValue};

pub const SOURCE: &str = "workload identity";

/// A projected token is a few KB; refuse anything absurd before reading it.
const MAX_TOKEN_FILE_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct WorkloadIdentity {
    authority: Authority,
    client_id: String,
    token_file: PathBuf,
}

impl WorkloadIdentity {
    /// None when `AZURE_FEDERATED_TOKEN_FILE` is not set; an error when it is set but
    /// the rest of the configuration is missing.
    pub fn from_env(env: &Env, cloud: Cloud) -> Result<Option<Self>, CredentialError> {
        let Some(token_file) = env.get("AZURE_FEDERATED_TOKEN_FILE") else {
            return Ok(None);
        };
        let missing: Vec<&str> = ["AZURE_CLIENT_ID", "AZURE_TENANT_ID"]
            .into_iter()
            .filter(|v| !env.has(v))
            .collect();
        if !missing.is_empty() {
            return Err(CredentialError::new(
                SOURCE,
                ErrorKind::Misconfigured,
                format!("AZURE_FEDERATED_TOKEN_FILE is set but {} {} not", missing.join(" and "), if missing.len() == 1 { "is" } else { "are" }),
            )
            .with_hint("the workload identity webhook sets all three when the service account has the azure.workload.identity/client-id annotation"));
        }
        let client_id = env.get("AZURE_CLIENT_ID").unwrap_or_default().to_owned();
        let tenant = env.get("AZURE_TENANT_ID").unwrap_or_default();
        let authority = Authority::from_env(env, tenant, cloud, SOURCE)?;
        Ok(Some(Self {
            authority,
            client_id,
            token_file: PathBuf::from(token_file),
        }))
    }

    pub fn description(&self) -> String {
        format!(
            "{SOURCE} (client {}, token file {})",
            self.client_id,
            self.token_file.display()
        )
    }

    pub async fn get_token(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        let source = self.description();
        let assertion = self
            .read_assertion()
            .map_err(|why| CredentialError::new(&source, ErrorKind::Misconfigured, why))?;
        entra::request_token(
            clients,
            deadline,
            &source,
            &self.authority,
            &self.client_id,
            ClientAuth::Assertion(&assertion),
            audience,
        )
        .await
    }

    fn read_assertion(&self) -> Result<SecretValue, String> {
        let path = &self.token_file;
        let bytes = crate::secret::read_file_capped(path, MAX_TOKEN_FILE_BYTES).map_err(|e| {
            format!(
                "cannot read AZURE_FEDERATED_TOKEN_FILE {}: {e}",
                path.display()
            )
        })?;
        // A JWT has no whitespace; a trailing newline from an editor is harmless to drop.
        let text = std::str::from_utf8(bytes.trim_ascii())
            .map_err(|_| format!("AZURE_FEDERATED_TOKEN_FILE {} is not text", path.display()))?;
        if text.is_empty() {
            return Err(format!(
                "AZURE_FEDERATED_TOKEN_FILE {} is empty",
                path.display()
            ));
        }
        let mut owned = String::with_capacity(text.len());
        owned.push_str(text);
        Ok(SecretValue::new(owned))
    }
}
