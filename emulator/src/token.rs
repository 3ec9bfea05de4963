//! Access tokens and federated (workload identity) tokens: compact JWTs signed
//! with HMAC-SHA256 under a key drawn at random for each run.
//!
//! Real Entra tokens are RS256; clients treat access tokens as opaque, and the
//! few that peek (kvrun, for error hints) only base64-decode the payload, so a
//! symmetric signature is enough and keeps issuing and checking cheap. The
//! claims follow Entra's v1 access tokens for app-only callers.

use std::fmt;

use ring::hmac;
use serde_json::{Value, json};

use crate::config::IdentityConfig;
use crate::ids::{b64url, b64url_decode, random_bytes};

/// `kid` of access tokens: lets the token endpoint tell them from federated ones.
const ACCESS_KID: &str = "kvrun-emulator";
/// `kid` of the federated tokens written for workload identities.
const FEDERATION_KID: &str = "kvrun-emulator-federation";

/// Signs and verifies the run's tokens.
pub(crate) struct Signer {
    key: hmac::Key,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(redacted)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
}

/// A verified token's claims.
#[derive(Debug)]
pub(crate) struct Verified {
    pub claims: Value,
}

impl Verified {
    pub(crate) fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

impl Signer {
    pub(crate) fn new() -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()),
        }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let mut out = String::with_capacity(512);
        out.push_str(&b64url(header.to_string().as_bytes()));
        out.push('.');
        out.push_str(&b64url(claims.to_string().as_bytes()));
        let tag = hmac::sign(&self.key, out.as_bytes());
        out.push('.');
        out.push_str(&b64url(tag.as_ref()));
        out
    }

    /// An access token for `identity`, audience `audience`, valid from `now`
    /// for `lifetime` seconds.
    pub(crate) fn access_token(
        &self,
        tenant: &str,
        identity: &IdentityConfig,
        audience: &str,
        now: i64,
        lifetime: i64,
    ) -> String {
        let mut claims = json!({
            "aud": audience,
            "iss": issuer(tenant),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "oid": identity.object_id,
            "sub": identity.object_id,
            "tid": tenant,
            "appid": identity.client_id,
            "idtyp": "app",
            "ver": "1.0",
            "uti": b64url(&random_bytes::<12>()),
        });
        if let (Some(rid), Some(map)) = (&identity.resource_id, claims.as_object_mut()) {
            map.insert("xms_mirid".to_owned(), Value::String(rid.clone()));
        }
        self.sign(
            &json!({"typ": "JWT", "alg": "HS256", "kid": ACCESS_KID}),
            &claims,
        )
    }

    /// The federated token a workload identity presents as its client
    /// assertion, as the AKS webhook would project it into a file.
    pub(crate) fn federated_token(&self, identity: &IdentityConfig, now: i64) -> String {
        let claims = json!({
            "aud": [identity.audience],
            "iss": identity.issuer,
            "sub": identity.subject,
            "iat": now,
            "nbf": now.min(now + identity.token_lifetime_secs),
            "exp": now + identity.token_lifetime_secs,
            "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "app"}},
        });
        self.sign(
            &json!({"alg": "HS256", "typ": "JWT", "kid": FEDERATION_KID}),
            &claims,
        )
    }

    /// Checks the signature and the time window of one of this run's tokens.
    pub(crate) fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        let (_, claims) = decode(token).ok_or(TokenError::Malformed)?;
        let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let sig = b64url_decode(sig).ok_or(TokenError::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &sig).map_err(|_| TokenError::BadSignature)?;
        let exp = numeric_date(&claims, "exp").ok_or(TokenError::Malformed)?;
        if exp <= now {
            return Err(TokenError::Expired);
        }
        if numeric_date(&claims, "nbf").is_some_and(|nbf| nbf > now + 300) {
            return Err(TokenError::NotYetValid);
        }
        Ok(Verified { claims })
    }
}

/// A JWT NumericDate claim: seconds, possibly fractional (RFC 7519 §2; MSAL
/// Python sends floats), truncated to whole seconds.
pub(crate) fn numeric_date(claims: &Value, name: &str) -> Option<i64> {
    let v = claims.get(name)?;
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            // Checked to be finite and far inside i64's range just above.
            .map(|f| {
                #[allow(clippy::cast_possible_truncation)]
                let secs = f.trunc() as i64;
                secs
            })
    })
}

/// Whether a JWT header marks one of the emulator's federated tokens.
pub(crate) fn is_federated(header: &Value) -> bool {
    header.get("kid").and_then(Value::as_str) == Some(FEDERATION_KID)
}

/// `https://sts.windows.net/<tenant>/`: the `iss` of Entra v1 access tokens.
pub(crate) fn issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

/// Header and claims of a compact JWT, without checking anything.
pub(crate) fn decode(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let header = parts.next()?;
    let claims = parts.next()?;
    parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url_decode(header)?).ok()?;
    let claims: Value = serde_json::from_slice(&b64url_decode(claims)?).ok()?;
    (header.is_object() && claims.is_object()).then_some((header, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn identity() -> IdentityConfig {
        Config::default().identities[0].clone()
    }

    #[test]
    fn round_trip_and_claims() {
        let s = Signer::new();
        let id = identity();
        let t = s.access_token("tid", &id, "https://127.0.0.1:1", 1000, 3600);
        let v = s.verify(&t, 2000).expect("valid");
        assert_eq!(v.claim("aud"), Some("https://127.0.0.1:1"));
        assert_eq!(v.claim("iss"), Some("https://sts.windows.net/tid/"));
        assert_eq!(v.claim("oid"), Some(id.object_id.as_str()));
        assert_eq!(v.claim("appid"), Some(id.client_id.as_str()));
        assert_eq!(v.claim("idtyp"), Some("app"));
        assert!(!is_federated(&decode(&t).expect("decodes").0));
    }

    #[test]
    fn rejections() {
        let s = Signer::new();
        let t = s.access_token("tid", &identity(), "aud", 1000, 3600);
        assert_eq!(s.verify(&t, 4600).err(), Some(TokenError::Expired));
        assert_eq!(
            Signer::new().verify(&t, 2000).err(),
            Some(TokenError::BadSignature)
        );
        let (head, rest) = t.split_once('.').expect("dots");
        let (_, sig) = rest.split_once('.').expect("dots");
        let forged = format!("{head}.{}.{sig}", b64url(br#"{"exp":99999999999}"#));
        assert_eq!(
            s.verify(&forged, 2000).err(),
            Some(TokenError::BadSignature)
        );
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(s.verify(bad, 0).err(), Some(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn federated_tokens() {
        let s = Signer::new();
        let mut id = identity();
        id.token_lifetime_secs = -10;
        let t = s.federated_token(&id, 1000);
        let (h, c) = decode(&t).expect("decodes");
        assert!(is_federated(&h));
        assert_eq!(c["aud"][0], "api://AzureADTokenExchange");
        assert_eq!(s.verify(&t, 1000).err(), Some(TokenError::Expired));
    }
}
