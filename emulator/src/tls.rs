//! The run's certificate authority and server certificates (rcgen, ECDSA
//! P-256), and the rustls server configurations built from them (ring
//! provider, ALPN `h2` then `http/1.1`).
//!
//! A fresh CA per run means nothing trusted outlives the emulator: clients
//! trust it only through the `ca.pem` the run writes (SSL_CERT_FILE,
//! REQUESTS_CA_BUNDLE). The `expired`, `wrong-host` and `untrusted` vault modes
//! exist so that client-side TLS failures can be tested against a real server.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, date_time_ymd,
};
use ring::digest;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::TlsMode;
use crate::ids::random_bytes;

/// Host names and addresses every valid server certificate covers.
const SANS: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The run's CA: its PEM (written to `ca.pem`) and the key that signs server
/// certificates.
pub(crate) struct Authority {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

fn serial() -> SerialNumber {
    let mut b = random_bytes::<16>();
    // Positive and non-zero in DER.
    b[0] = (b[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&b)
}

fn ca_params(common_name: &str) -> Result<CertificateParams, TlsError> {
    let year = crate::clock::current_year();
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "kvrun-emulator");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // Python 3.13's strict X.509 checks want key usage on the CA.
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = date_time_ymd(year - 1, 1, 1);
    p.not_after = date_time_ymd(year + 2, 1, 1);
    p.serial_number = Some(serial());
    Ok(p)
}

fn new_key() -> Result<KeyPair, TlsError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

impl Authority {
    pub(crate) fn new() -> Result<Authority, TlsError> {
        Self::named("kvrun-emulator CA")
    }

    fn named(common_name: &str) -> Result<Authority, TlsError> {
        let key = new_key()?;
        let params = ca_params(common_name)?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf certificate and key for a server in the given mode, naming
    /// `host` too when the server answers as a DNS name of its own.
    fn leaf(
        &self,
        mode: TlsMode,
        host: Option<&str>,
    ) -> Result<(CertificateDer<'static>, KeyPair), TlsError> {
        let year = crate::clock::current_year();
        let names: Vec<String> = match mode {
            TlsMode::WrongHost => vec!["wrong-host.kvrun-emulator.test".to_owned()],
            _ => SANS
                .iter()
                .copied()
                .chain(host)
                .map(str::to_owned)
                .collect(),
        };
        let mut p = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kvrun-emulator");
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(serial());
        if mode == TlsMode::Expired {
            p.not_before = date_time_ymd(year - 3, 1, 1);
            p.not_after = date_time_ymd(year - 2, 1, 1);
        } else {
            p.not_before = date_time_ymd(year - 1, 1, 1);
            p.not_after = date_time_ymd(year + 1, 12, 31);
        }
        let key = new_key()?;
        let cert = if mode == TlsMode::Untrusted {
            // A stranger CA whose certificate is never written anywhere.
            Authority::named("kvrun-emulator untrusted CA")?.sign(&p, &key)?
        } else {
            self.sign(&p, &key)?
        };
        Ok((cert, key))
    }

    fn sign(
        &self,
        p: &CertificateParams,
        key: &KeyPair,
    ) -> Result<CertificateDer<'static>, TlsError> {
        Ok(p.signed_by(key, &self.issuer)?.der().clone())
    }

    /// A rustls server configuration for a vault or the Entra endpoint.
    pub(crate) fn server_config(
        &self,
        mode: TlsMode,
        host: Option<&str>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let (cert, key) = self.leaf(mode, host)?;
        server_config(vec![cert], &key)
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: &KeyPair,
) -> Result<Arc<ServerConfig>, TlsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Service Fabric's identity endpoint serves a self-signed certificate that
/// clients pin by SHA-1 thumbprint (IDENTITY_SERVER_THUMBPRINT), not by chain.
/// Returns the configuration and the upper-case hex thumbprint.
pub(crate) fn self_signed_pinned() -> Result<(Arc<ServerConfig>, String), TlsError> {
    let key = new_key()?;
    let year = crate::clock::current_year();
    let mut p = CertificateParams::new(SANS.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    p.not_before = date_time_ymd(year - 1, 1, 1);
    p.not_after = date_time_ymd(year + 1, 12, 31);
    p.serial_number = Some(serial());
    let cert = p.self_signed(&key)?.der().clone();
    let thumbprint =
        crate::ids::hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &cert).as_ref())
            .to_ascii_uppercase();
    Ok((server_config(vec![cert], &key)?, thumbprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_every_mode() {
        let ca = Authority::new().expect("ca");
        assert!(ca.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        for mode in [
            TlsMode::Valid,
            TlsMode::Expired,
            TlsMode::WrongHost,
            TlsMode::Untrusted,
        ] {
            let c = ca
                .server_config(mode, Some("demo.vault.azure.net"))
                .expect("config");
            assert_eq!(c.alpn_protocols[0], b"h2");
        }
        let (_, thumb) = self_signed_pinned().expect("sf");
        assert_eq!(thumb.len(), 40);
    }
}
