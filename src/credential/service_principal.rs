//! A service principal configured in the environment: `AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID`, and `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`.
//!
//! With a certificate, kvrun signs a client assertion (RS256 JWT, protocol reference
//! §6.3): header `x5t` = base64url SHA-1 of the certificate, claims `aud` = the token
//! endpoint, `iss` = `sub` = the client id, a random `jti`, and a 10-minute lifetime.
//! The file is PEM holding the certificate and an unencrypted PKCS#8 or PKCS#1 RSA key.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::pem::{PemObject, SectionKind};
use zeroize::Zeroizing;

use super::entra::{self, Authority, ClientAuth};
use super::{CredentialError, Env, ErrorKind, unix_now};
use crate::cloud::Cloud;
use crate::http::Clients;
use crate::retry::Deadline;
use crate::secret::{AccessToken, SecretValue};

pub const NOT_SET: &str = "environment: AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH are not all set";

#[derive(Debug)]
pub struct ServicePrincipal {
    authority: Authority,
    client_id: String,
    proof: Proof,
    /// Where the configuration came from, for messages.
    origin: &'static str,
}

#[derive(Debug)]
enum Proof {
    Secret(SecretValue),
    Certificate(Box<Certificate>),
}

impl ServicePrincipal {
    /// The service principal of `AZURE_*` variables, or None when they are not set.
    pub fn from_env(env: &Env, cloud: Cloud) -> Result<Option<Self>, CredentialError> {
        let (Some(tenant), Some(client_id)) =
            (env.get("AZURE_TENANT_ID"), env.get("AZURE_CLIENT_ID"))
        else {
            return Ok(None);
        };
        let proof = if let Some(secret) = env.get("AZURE_CLIENT_SECRET") {
            Proof::Secret(SecretValue::new(secret.to_owned()))
        } else if let Some(path) = env.get("AZURE_CLIENT_CERTIFICATE_PATH") {
            let send_chain = env
                .get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
            Proof::Certificate(Box::new(Certificate::load(
                std::path::Path::new(path),
                send_chain,
            )?))
        } else {
            return Ok(None);
        };
        Self::new(env, cloud, tenant, client_id, proof, "environment").map(Some)
    }

    /// A service principal with a client secret from another configuration source
    /// (the AppAuthentication connection string).
    pub fn with_secret(
        env: &Env,
        cloud: Cloud,
        tenant: &str,
        client_id: &str,
        secret: SecretValue,
        origin: &'static str,
    ) -> Result<Self, CredentialError> {
        Self::new(env, cloud, tenant, client_id, Proof::Secret(secret), origin)
    }

    fn new(
        env: &Env,
        cloud: Cloud,
        tenant: &str,
        client_id: &str,
        proof: Proof,
        origin: &'static str,
    ) -> Result<Self, CredentialError> {
        let source = describe(client_id, &proof, origin);
        let authority = Authority::from_env(env, tenant, cloud, &source)?;
        Ok(Self {
            authority,
            client_id: client_id.to_owned(),
            proof,
            origin,
        })
    }

    pub fn description(&self) -> String {
        describe(&self.client_id, &self.proof, self.origin)
    }

    pub async fn get_token(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        let source = self.description();
        match &self.proof {
            Proof::Secret(secret) => {
                entra::request_token(
                    clients,
                    deadline,
                    &source,
                    &self.authority,
                    &self.client_id,
                    ClientAuth::Secret(secret),
                    audience,
                )
                .await
            }
            Proof::Certificate(certificate) => {
                let assertion = certificate
                    .assertion(&self.client_id, &self.authority.token_url())
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
        }
    }
}

fn describe(client_id: &str, proof: &Proof, origin: &str) -> String {
    let how = match proof {
        Proof::Secret(_) => "client secret",
        Proof::Certificate(_) => "certificate",
    };
    format!("service principal {client_id} ({how}, from {origin})")
}

/// A certificate and its RSA key, read from a PEM file.
pub struct Certificate {
    chain: Vec<Vec<u8>>,
    key: RsaKeyPair,
    send_chain: bool,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("certificates", &self.chain.len())
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl Certificate {
    pub fn load(path: &std::path::Path, send_chain: bool) -> Result<Self, CredentialError> {
        let source = "service principal (certificate, from environment)";
        let fail = |why: String| {
            CredentialError::new(
                source,
                ErrorKind::Misconfigured,
                format!("AZURE_CLIENT_CERTIFICATE_PATH {}: {why}", path.display()),
            )
        };
        let pem =
            Zeroizing::new(std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?);
        if !pem.trim_ascii_start().starts_with(b"-----BEGIN") {
            return Err(fail(
                "not a PEM file; PKCS#12 (.pfx) is not read yet: convert it with \
                 `openssl pkcs12 -in cert.pfx -out cert.pem -nodes`"
                    .to_owned(),
            ));
        }
        Self::from_pem(&pem, send_chain).map_err(fail)
    }

    pub fn from_pem(pem: &[u8], send_chain: bool) -> Result<Self, String> {
        let mut chain = Vec::new();
        let mut key = None;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
            let (kind, der) = section.map_err(|e| format!("bad PEM: {e}"))?;
            let der = Zeroizing::new(der);
            match kind {
                SectionKind::Certificate => chain.push(der.to_vec()),
                SectionKind::PrivateKey => {
                    key = Some(
                        RsaKeyPair::from_pkcs8(&der)
                            .map_err(|e| format!("the PKCS#8 key is not a usable RSA key: {e}"))?,
                    );
                }
                SectionKind::RsaPrivateKey => {
                    key = Some(
                        RsaKeyPair::from_der(&der)
                            .map_err(|e| format!("the RSA key is not usable: {e}"))?,
                    );
                }
                SectionKind::EcPrivateKey => {
                    return Err(
                        "the key is an EC key; Entra ID certificate credentials need RSA"
                            .to_owned(),
                    );
                }
                _ => {}
            }
        }
        let key =
            key.ok_or("no unencrypted private key (PRIVATE KEY or RSA PRIVATE KEY) in the file")?;
        if chain.is_empty() {
            return Err("no CERTIFICATE in the file".to_owned());
        }
        Ok(Self {
            chain,
            key,
            send_chain,
        })
    }

    /// The signed client assertion for one token request.
    pub fn assertion(&self, client_id: &str, token_url: &str) -> Result<SecretValue, String> {
        let thumbprint =
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.chain[0]);
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": URL_SAFE_NO_PAD.encode(thumbprint.as_ref())});
        if self.send_chain {
            header["x5c"] = self.chain.iter().map(|der| STANDARD.encode(der)).collect();
        }
        let now = unix_now();
        let claims = serde_json::json!({
            "aud": token_url, "iss": client_id, "sub": client_id, "jti": random_id(),
            "nbf": now, "iat": now, "exp": now + 600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the client assertion failed".to_owned())?;
        Ok(SecretValue::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

fn random_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
