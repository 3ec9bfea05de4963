//! The types that hold secret material: fetched secret values and access tokens.
//!
//! Every secret kvrun handles lives in one of these types from the moment it is read
//! off the wire until it is handed to `execve` or dropped:
//! - the memory is overwritten with zeros on drop (`zeroize`, through `secrecy`);
//! - `Debug` prints `[REDACTED]`, and there is no `Display` or `Serialize`, so a secret
//!   cannot reach a log line or an error message by accident;
//! - reading the value takes an explicit, greppable `expose_secret()` call.
//!
//! What this cannot cover (library-internal buffers, the child's environment after
//! exec) is written down in `doc/threat-model.md`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, Visitor};
use zeroize::Zeroizing;

/// Reads a file of at most `limit` bytes into zeroizing memory, sized up front: a
/// larger file (or `/dev/zero`) is refused without reading past the limit.
pub fn read_file_capped(
    path: &std::path::Path,
    limit: usize,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(limit.min(64 * 1024) + 1));
    let mut capped = file.take(limit as u64 + 1);
    // Grow by hand, in zeroizing copies, past the first 64 KiB.
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        let n = capped.read(&mut chunk[..])?;
        if n == 0 {
            break;
        }
        if bytes.len() + n > limit {
            return Err(std::io::Error::other(format!("larger than {limit} bytes")));
        }
        if bytes.len() + n > bytes.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (bytes.capacity() * 2).max(bytes.len() + n),
            ));
            bigger.extend_from_slice(&bytes);
            bytes = bigger;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Ok(bytes)
}

/// The value of one Key Vault secret.
pub struct SecretValue(SecretString);

impl SecretValue {
    /// Takes ownership of `value`; the string is zeroized when this is dropped.
    pub fn new(value: String) -> Self {
        // `into_boxed_str` reallocates when capacity exceeds length, which would leave
        // an unzeroized copy behind: make the two equal first, through a zeroizing copy.
        if value.capacity() == value.len() {
            Self(SecretString::from(value))
        } else {
            let value = Zeroizing::new(value);
            let mut exact = String::with_capacity(value.len());
            exact.push_str(&value);
            Self(SecretString::from(exact))
        }
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn len(&self) -> usize {
        self.expose_secret().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

/// Deserializes a JSON string straight into zeroizing memory. serde_json hands over
/// strings without escapes as borrowed slices of the (zeroizing) response buffer, so
/// the only copy is the one made here.
impl<'de> serde::Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl Visitor<'_> for SecretVisitor {
            type Value = SecretValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretValue, E> {
                let mut s = String::with_capacity(v.len());
                s.push_str(v);
                Ok(SecretValue::new(s))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<SecretValue, E> {
                Ok(SecretValue::new(v))
            }
        }
        deserializer.deserialize_str(SecretVisitor)
    }
}

/// An OAuth2 bearer token for one audience.
pub struct AccessToken {
    token: SecretValue,
    /// Unix seconds, when the issuer said; only used in diagnostics.
    pub expires_on: Option<u64>,
}

impl AccessToken {
    pub fn new(token: SecretValue, expires_on: Option<u64>) -> Self {
        Self { token, expires_on }
    }

    pub fn expose_secret(&self) -> &str {
        self.token.expose_secret()
    }

    /// The `Authorization` header value. The header is marked sensitive so that HTTP/2
    /// header compression never stores it in its dynamic table.
    pub fn bearer_header(&self) -> Result<reqwest::header::HeaderValue, InvalidToken> {
        let mut text = Zeroizing::new(String::with_capacity(7 + self.expose_secret().len()));
        text.push_str("Bearer ");
        text.push_str(self.expose_secret());
        let mut value = reqwest::header::HeaderValue::from_str(&text).map_err(|_| InvalidToken)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Non-secret claims from the token's payload, for error hints ("which identity was
    /// denied"). Tokens that are not JWTs yield nothing. The signature is not checked:
    /// this is for display only and never for a decision.
    pub fn claims(&self) -> TokenClaims {
        TokenClaims::from_jwt(self.expose_secret()).unwrap_or_default()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// A token that cannot be put in an HTTP header (control characters).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the access token contains characters that are not allowed in an HTTP header")]
pub struct InvalidToken;

/// Who a token says it was issued to. None of these is secret: they are the ids an
/// administrator grants access to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenClaims {
    pub app_id: Option<String>,
    pub object_id: Option<String>,
    pub tenant_id: Option<String>,
    pub mi_resource_id: Option<String>,
}

impl TokenClaims {
    fn from_jwt(token: &str) -> Option<Self> {
        use base64::Engine as _;
        #[derive(serde::Deserialize)]
        struct Raw {
            appid: Option<String>,
            azp: Option<String>,
            oid: Option<String>,
            tid: Option<String>,
            xms_mirid: Option<String>,
        }
        let payload = token.split('.').nth(1)?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()?,
        );
        let raw: Raw = serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            app_id: raw.appid.or(raw.azp),
            object_id: raw.oid,
            tenant_id: raw.tid,
            mi_resource_id: raw.xms_mirid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_reads() {
        let dir = std::env::temp_dir().join(format!("kvrun-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, vec![b'x'; 100_000]).unwrap();
        assert_eq!(read_file_capped(&small, 100_000).unwrap().len(), 100_000);
        assert!(
            read_file_capped(&small, 99_999)
                .unwrap_err()
                .to_string()
                .contains("larger than 99999")
        );
        // An endless file is refused at the cap, not read forever.
        assert!(read_file_capped(std::path::Path::new("/dev/zero"), 4096).is_err());
        assert!(read_file_capped(&dir.join("missing"), 10).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_output_is_redacted() {
        let value = SecretValue::new("canary-value-123".to_owned());
        let token = AccessToken::new(SecretValue::new("canary-token-456".to_owned()), Some(1));
        let printed = format!("{value:?} {token:?} {value:#?} {token:#?}");
        assert!(!printed.contains("canary"), "{printed}");
    }

    #[test]
    fn deserializes_from_json_with_and_without_escapes() {
        for (json, expected) in [
            (r#""plain""#, "plain"),
            (
                r#""line\nbreak \"quoted\" \u00e9""#,
                "line\nbreak \"quoted\" é",
            ),
            (r#""""#, ""),
        ] {
            let value: SecretValue = serde_json::from_str(json).unwrap();
            assert_eq!(value.expose_secret(), expected);
        }
    }

    #[test]
    fn claims_are_read_from_a_jwt_payload() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"appid":"app-1","oid":"obj-1","tid":"ten-1","aud":"x"}"#);
        let token = AccessToken::new(SecretValue::new(format!("e30.{payload}.sig")), None);
        assert_eq!(
            token.claims(),
            TokenClaims {
                app_id: Some("app-1".into()),
                object_id: Some("obj-1".into()),
                tenant_id: Some("ten-1".into()),
                mi_resource_id: None,
            }
        );
        let opaque = AccessToken::new(SecretValue::new("not-a-jwt".into()), None);
        assert_eq!(opaque.claims(), TokenClaims::default());
    }
}
