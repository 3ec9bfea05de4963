//! A service principal configured in the environment: `AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID`, and `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`.
//!
//! With a certificate, kvrun signs a client assertion (RS256 JWT, protocol reference
//! §6.3): header `x5t` = base64url SHA-1 of the certificate, claims `aud` = the token
//! endpoint, `iss` = `sub` = the client id, a random `jti`, and a 10-minute lifetime.
//! The file (`AZURE_CLIENT_CERTIFICATE_PATH`) is either PEM holding the certificate and
//! an unencrypted PKCS#8 or PKCS#1 RSA key, or PKCS#12 (`.pfx`/`.p12`, DER, as Azure
//! and Windows export it) read by [`super::pkcs12`] with the password in
//! `AZURE_CLIENT_CERTIFICATE_PASSWORD` (unset: the empty password). A file that starts
//! with `-----BEGIN` is PEM, as is one that holds a PEM section after some text (what
//! `openssl pkcs12 -out` writes); any other file is read as PKCS#12.
//!
//! The AppAuthentication connection string can also name the certificate by its Key
//! Vault secret (`KeyVaultCertificateSecretIdentifier`): it is fetched once, through
//! the machine's managed identity, and read as Key Vault stores certificates — PEM
//! text, or base64 PKCS#12 with an empty password.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::pem::{PemObject, SectionKind};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::entra::{self, Authority, ClientAuth};
use super::pkcs12::{self, Pkcs12Error};
use super::{Credential, CredentialError, Env, ErrorKind, unix_now};
use crate::cloud::Cloud;
use crate::config::SecretId;
use crate::http::Clients;
use crate::keyvault;
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
    KeyVaultCertificate(Box<KeyVaultCertificate>),
}

/// A certificate kept as a Key Vault secret, and the identity that may read it.
#[derive(Debug)]
struct KeyVaultCertificate {
    secret: SecretId,
    bootstrap: Credential,
    loaded: OnceCell<Result<Certificate, CredentialError>>,
}

impl ServicePrincipal {
    /// The service principal of `AZURE_*` variables, or None when they are not set.
    pub fn from_env(
        env: &Env,
        cloud: Cloud,
        budget: Duration,
    ) -> Result<Option<Self>, CredentialError> {
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
                env.get("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
                budget,
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

    /// A service principal whose certificate is the Key Vault secret `secret`, read
    /// with the `bootstrap` credential (a managed identity).
    #[allow(
        clippy::too_many_arguments,
        reason = "one constructor per configuration source, all named"
    )]
    pub fn with_key_vault_certificate(
        env: &Env,
        cloud: Cloud,
        tenant: &str,
        client_id: &str,
        secret: SecretId,
        bootstrap: Credential,
        origin: &'static str,
    ) -> Result<Self, CredentialError> {
        let proof = Proof::KeyVaultCertificate(Box::new(KeyVaultCertificate {
            secret,
            bootstrap,
            loaded: OnceCell::new(),
        }));
        Self::new(env, cloud, tenant, client_id, proof, origin)
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
            Proof::Certificate(_) | Proof::KeyVaultCertificate(_) => {
                let certificate = match &self.proof {
                    Proof::KeyVaultCertificate(kv) => kv
                        .loaded
                        .get_or_init(|| kv.load(clients, deadline, &source))
                        .await
                        .as_ref()
                        .map_err(Clone::clone)?,
                    Proof::Certificate(certificate) => certificate,
                    Proof::Secret(_) => unreachable!("matched above"),
                };
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
        Proof::Secret(_) => "client secret".to_owned(),
        Proof::Certificate(_) => "certificate".to_owned(),
        Proof::KeyVaultCertificate(kv) => format!(
            "certificate {}/secrets/{} read with {}",
            kv.secret.vault,
            kv.secret.name,
            kv.bootstrap.description()
        ),
    };
    format!("service principal {client_id} ({how}, from {origin})")
}

impl KeyVaultCertificate {
    async fn load(
        &self,
        clients: &Clients,
        deadline: Deadline,
        source: &str,
    ) -> Result<Certificate, CredentialError> {
        let secret = &self.secret;
        let fail = |why: String| {
            CredentialError::new(
                source,
                ErrorKind::Rejected,
                format!(
                    "reading the certificate {}/secrets/{}: {why}",
                    secret.vault, secret.name
                ),
            )
        };
        let discovered =
            keyvault::audience_for(&clients.tls, None, &secret.vault, secret, deadline)
                .await
                .map_err(|e| fail(e.to_string()))?;
        let token = Box::pin(
            self.bootstrap
                .get_token(clients, deadline, &discovered.audience),
        )
        .await?;
        let fetched = keyvault::get_secret(&clients.tls, None, secret, &token, deadline)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let value = fetched.value.expose_secret().as_bytes();
        if is_pem(value) {
            return Certificate::from_pem(value, false).map_err(fail);
        }
        let der = Zeroizing::new(
            STANDARD
                .decode(value.trim_ascii())
                .map_err(|_| fail("neither PEM nor base64 PKCS#12".to_owned()))?,
        );
        // Key Vault stores a certificate's PFX with an empty password.
        let budget = deadline.remaining();
        let decoding =
            tokio::task::spawn_blocking(move || Certificate::from_pkcs12(&der, Some(""), false));
        match tokio::time::timeout(budget, decoding).await {
            Ok(Ok(decoded)) => decoded.map_err(fail),
            Ok(Err(_)) => Err(fail("PKCS#12: decoding stopped unexpectedly".to_owned())),
            Err(_) => Err(fail(too_slow(budget))),
        }
    }
}

fn too_slow(budget: Duration) -> String {
    format!(
        "PKCS#12: decrypting did not finish within {:.2} s (--timeout): the file asks for \
         more key-derivation rounds than can be done in time; re-export it with the \
         usual 2,048 (openssl pkcs12 -export -iter 2048 -maciter)",
        budget.as_secs_f64()
    )
}

/// A certificate and its RSA key, read from a PEM or PKCS#12 file.
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
    /// Reads the file at `path`: PEM, or PKCS#12 with `password` (None: the empty one),
    /// decrypted within `budget`.
    pub fn load(
        path: &std::path::Path,
        send_chain: bool,
        password: Option<&str>,
        budget: Duration,
    ) -> Result<Self, CredentialError> {
        let source = "service principal (certificate, from environment)";
        let fail = |why: String| {
            CredentialError::new(
                source,
                ErrorKind::Misconfigured,
                format!("AZURE_CLIENT_CERTIFICATE_PATH {}: {why}", path.display()),
            )
        };
        let file = crate::secret::read_file_capped(path, 1024 * 1024)
            .map_err(|e| fail(format!("cannot read it: {e}")))?;
        if is_pem(&file) {
            Self::from_pem(&file, send_chain).map_err(fail)
        } else {
            Self::from_pkcs12_within(file, password, send_chain, budget).map_err(fail)
        }
    }

    /// [`Self::from_pkcs12`] on a thread of its own, given up after `budget`: the file
    /// decides how many key-derivation rounds it takes (up to
    /// [`pkcs12::MAX_ITERATIONS`], seconds of CPU each), and kvrun's deadline must
    /// hold all the same. A thread left running ends with the process (exit or exec).
    fn from_pkcs12_within(
        der: Zeroizing<Vec<u8>>,
        password: Option<&str>,
        send_chain: bool,
        budget: Duration,
    ) -> Result<Self, String> {
        let password = password.map(|p| Zeroizing::new(p.to_owned()));
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("kvrun-pkcs12".to_owned())
            .spawn(move || {
                let decoded =
                    Self::from_pkcs12(&der, password.as_ref().map(|p| p.as_str()), send_chain);
                // The receiver is gone only when the budget ran out.
                let _ = done.send(decoded);
            })
            .map_err(|e| format!("PKCS#12: cannot start decoding: {e}"))?;
        match outcome.recv_timeout(budget) {
            Ok(decoded) => decoded,
            Err(RecvTimeoutError::Timeout) => Err(too_slow(budget)),
            Err(RecvTimeoutError::Disconnected) => {
                Err("PKCS#12: decoding stopped unexpectedly".to_owned())
            }
        }
    }

    /// A PKCS#12 (.pfx) file's certificates and key.
    pub fn from_pkcs12(
        der: &[u8],
        password: Option<&str>,
        send_chain: bool,
    ) -> Result<Self, String> {
        let contents = pkcs12::parse(der, password.unwrap_or_default()).map_err(|e| match e {
            Pkcs12Error::NotPkcs12(why) => format!("neither PEM nor PKCS#12 (.pfx): {why}"),
            Pkcs12Error::WrongPassword | Pkcs12Error::Decrypt(_) => match password {
                None => format!(
                    "PKCS#12: {e}; set AZURE_CLIENT_CERTIFICATE_PASSWORD to the file's password"
                ),
                Some(_) => format!("PKCS#12: {e}; check AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            },
            _ => format!("PKCS#12: {e}"),
        })?;
        let key = RsaKeyPair::from_pkcs8(&contents.key).map_err(|e| {
            format!(
                "PKCS#12: the private key is not a usable RSA key ({e}); Entra ID certificate \
                 credentials need RSA"
            )
        })?;
        Ok(Self {
            chain: contents.certificates,
            key,
            send_chain,
        })
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

/// PEM: starts with a PEM section, or has one after some text (`openssl pkcs12 -out`
/// puts "Bag Attributes" before each); DER PKCS#12 starts with a SEQUENCE tag, 0x30.
fn is_pem(file: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN";
    file.trim_ascii_start().starts_with(BEGIN)
        || (file.first() != Some(&0x30) && file.windows(BEGIN.len()).any(|w| w == BEGIN))
}

fn random_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
