//! The Entra ID (Azure AD) endpoints over HTTPS: the v2.0 token endpoint for
//! the client-credentials grant (client secret, workload identity federated
//! token, or certificate-signed assertion), plus the OpenID discovery documents
//! MSAL fetches before it posts a token request.
//!
//! Errors use Entra's envelope (aad-token-401-invalid-client-net-2022.json):
//! `error`, `error_description` starting `AADSTSnnnn: `, numeric
//! `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
//! Codes beyond AADSTS7000215 (recorded) follow Entra's documented meanings;
//! their exact wording is \[UNCONFIRMED\].

use hyper::{Method, Response};
use ring::digest;
use serde_json::{Value, json};

use crate::clock::{entra_timestamp, now_secs};
use crate::config::{IdentityConfig, IdentityKind};
use crate::http::{self, Body, Req};
use crate::ids::{b64url, b64url_decode, new_guid};
use crate::server::Shared;
use crate::token::{TokenError, numeric_date};

/// Entra client-credential tokens: 3599 s, as in the recordings.
const TOKEN_LIFETIME: i64 = 3599;
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Compares two strings without an early exit on the first difference.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Entra's error body. `authority` fills `error_uri` ("" for the public one).
pub(crate) fn error_json(
    error: &str,
    code: u32,
    message: &str,
    correlation_id: Option<&str>,
    authority: &str,
) -> Value {
    let trace = new_guid();
    let correlation = correlation_id.map_or_else(new_guid, str::to_owned);
    let ts = entra_timestamp(now_secs());
    let authority = if authority.is_empty() {
        "https://login.microsoftonline.com"
    } else {
        authority
    };
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}"
        ),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("{authority}/error?code={code}"),
    })
}

/// An Entra error response with the headers the recordings show.
fn error(
    s: &Shared,
    req: &Req,
    status: u16,
    err: &str,
    code: u32,
    message: &str,
) -> Response<Body> {
    let correlation = req.header("client-request-id");
    let body = error_json(err, code, message, correlation, &s.urls.authority);
    let mut r = http::json(status, &body);
    if let Some(trace) = body["trace_id"].as_str() {
        http::set_header(&mut r, "x-ms-request-id", trace);
    }
    http::set_header(&mut r, "x-ms-clitelem", &format!("1,{code},0,,"));
    common_headers(&mut r, req);
    r
}

fn common_headers(r: &mut Response<Body>, req: &Req) {
    http::set_header(r, "cache-control", "no-store, no-cache");
    http::set_header(r, "pragma", "no-cache");
    if let Some(id) = req.header("client-request-id") {
        http::set_header(r, "client-request-id", id);
    }
}

fn tenant_not_found(s: &Shared, req: &Req, tenant: &str) -> Response<Body> {
    error(
        s,
        req,
        400,
        "invalid_request",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

/// Routes a request to the Entra endpoint.
pub(crate) fn handle(s: &Shared, req: &Req) -> Response<Body> {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.clone(), segments.as_slice()) {
        (Method::GET, ["common", "discovery", "instance"]) => instance_discovery(s, req),
        (Method::GET, [tenant, "v2.0", ".well-known", "openid-configuration"]) => {
            openid_configuration(s, req, tenant, true)
        }
        (Method::GET, [tenant, ".well-known", "openid-configuration"]) => {
            openid_configuration(s, req, tenant, false)
        }
        (Method::GET, [_, "discovery", "v2.0", "keys"] | [_, "discovery", "keys"]) => {
            // Tokens are HMAC-signed with a key that is never published.
            let mut r = http::json(200, &json!({"keys": []}));
            common_headers(&mut r, req);
            r
        }
        (Method::POST, [tenant, "oauth2", "v2.0", "token"]) => token(s, req, tenant),
        (_, [_, "oauth2", "v2.0", "token"]) => error(
            s,
            req,
            405,
            "invalid_request",
            900_561,
            "The endpoint only accepts POST requests.",
        ),
        _ => error(
            s,
            req,
            404,
            "invalid_request",
            900_144,
            "The requested endpoint is not served by kvrun-emulator.",
        ),
    }
}

fn known_tenant(s: &Shared, tenant: &str) -> bool {
    tenant.eq_ignore_ascii_case(&s.tenant_id)
}

/// The instance-discovery answer for MSAL clients that still ask (the SDKs do
/// unless `disable_instance_discovery` is set, and then they ask the public
/// cloud, not this host).
fn instance_discovery(s: &Shared, req: &Req) -> Response<Body> {
    let host = s.urls.authority.trim_start_matches("https://");
    let mut r = http::json(
        200,
        &json!({
            "tenant_discovery_endpoint": format!(
                "{}/{}/v2.0/.well-known/openid-configuration", s.urls.authority, s.tenant_id),
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }),
    );
    common_headers(&mut r, req);
    r
}

/// OpenID Connect discovery. MSAL requires `authorization_endpoint` and
/// `token_endpoint` and takes the tenant from the token endpoint's path.
fn openid_configuration(s: &Shared, req: &Req, tenant: &str, v2: bool) -> Response<Body> {
    if !known_tenant(s, tenant) {
        return tenant_not_found(s, req, tenant);
    }
    let a = format!("{}/{}", s.urls.authority, s.tenant_id);
    let (oauth, issuer) = if v2 {
        (format!("{a}/oauth2/v2.0"), format!("{a}/v2.0"))
    } else {
        (format!("{a}/oauth2"), crate::token::issuer(&s.tenant_id))
    };
    let keys = if v2 {
        format!("{a}/discovery/v2.0/keys")
    } else {
        format!("{a}/discovery/keys")
    };
    let mut r = http::json(
        200,
        &json!({
            "token_endpoint": format!("{oauth}/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": keys,
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": issuer,
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{oauth}/authorize"),
            "device_authorization_endpoint": format!("{oauth}/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{oauth}/logout"),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "kvrun-emulator.test",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }),
    );
    common_headers(&mut r, req);
    r
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn missing(s: &Shared, req: &Req, name: &str) -> Response<Body> {
    error(
        s,
        req,
        400,
        "invalid_request",
        900_144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token`, grant `client_credentials`.
#[allow(clippy::too_many_lines)] // The checks follow Entra's order; splitting hides it.
fn token(s: &Shared, req: &Req, tenant: &str) -> Response<Body> {
    if !known_tenant(s, tenant) {
        return tenant_not_found(s, req, tenant);
    }
    let form = req.form();
    let Some(grant) = param(&form, "grant_type") else {
        return missing(s, req, "grant_type");
    };
    if grant != "client_credentials" {
        return error(
            s,
            req,
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let Some(client_id) = param(&form, "client_id") else {
        return missing(s, req, "client_id");
    };
    let Some(scope) = param(&form, "scope") else {
        return missing(s, req, "scope");
    };
    // Client credentials take exactly one `<resource>/.default` scope.
    let audience = match scope.split_whitespace().collect::<Vec<_>>().as_slice() {
        [one] => one.strip_suffix("/.default"),
        _ => None,
    };
    let Some(audience) = audience.filter(|a| !a.is_empty()) else {
        return error(
            s,
            req,
            400,
            "invalid_scope",
            1_002_012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let Some((index, identity)) = s.identities.iter().enumerate().find(|(_, i)| {
        matches!(
            i.kind,
            IdentityKind::ServicePrincipal | IdentityKind::Workload
        ) && i.client_id.eq_ignore_ascii_case(client_id)
    }) else {
        return error(
            s,
            req,
            400,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                s.tenant_id
            ),
        );
    };
    let secret = param(&form, "client_secret");
    let assertion = param(&form, "client_assertion");
    let checked = match (secret, assertion) {
        (Some(secret), _) => check_secret(s, req, identity, secret),
        (None, Some(assertion)) => {
            if param(&form, "client_assertion_type") != Some(JWT_BEARER) {
                return error(
                    s,
                    req,
                    400,
                    "invalid_request",
                    900_144,
                    &format!(
                        "The request body must contain the following parameter: 'client_assertion_type' with the value '{JWT_BEARER}'."
                    ),
                );
            }
            check_assertion(s, req, index, tenant, assertion)
        }
        (None, None) => Err(error(
            s,
            req,
            401,
            "invalid_client",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
    };
    if let Err(r) = checked {
        return r;
    }
    let now = now_secs();
    let lifetime = s.token_lifetime(TOKEN_LIFETIME);
    let token = s
        .signer
        .access_token(&s.tenant_id, identity, audience, now, lifetime);
    // aad-token-200-*: `expires_in` and `ext_expires_in` are numbers.
    let mut r = http::json(
        200,
        &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}),
    );
    http::set_header(&mut r, "x-ms-request-id", &new_guid());
    http::set_header(&mut r, "x-ms-clitelem", "1,0,0,,");
    common_headers(&mut r, req);
    r
}

fn check_secret(
    s: &Shared,
    req: &Req,
    identity: &IdentityConfig,
    secret: &str,
) -> Result<(), Response<Body>> {
    let ok = identity
        .secret
        .as_ref()
        .is_some_and(|want| constant_time_eq(secret, &want.0));
    if ok {
        return Ok(());
    }
    Err(error(
        s,
        req,
        401,
        "invalid_client",
        7_000_215,
        &format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
            identity.client_id
        ),
    ))
}

fn expired(s: &Shared, req: &Req, claims: &Value) -> Response<Body> {
    let now = now_secs();
    let nbf = numeric_date(claims, "nbf")
        .or_else(|| numeric_date(claims, "iat"))
        .unwrap_or(0);
    let exp = numeric_date(claims, "exp").unwrap_or(0);
    error(
        s,
        req,
        400,
        "invalid_client",
        700_024,
        &format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
            entra_timestamp(now),
            entra_timestamp(nbf),
            entra_timestamp(exp)
        ),
    )
}

fn check_assertion(
    s: &Shared,
    req: &Req,
    index: usize,
    tenant: &str,
    assertion: &str,
) -> Result<(), Response<Body>> {
    let malformed = || {
        error(
            s,
            req,
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        )
    };
    let Some((header, claims)) = crate::token::decode(assertion) else {
        return Err(malformed());
    };
    let identity = &s.identities[index];
    if crate::token::is_federated(&header) {
        check_federated(s, req, identity, assertion, &claims)
    } else {
        let cert = s.certificates.get(index).and_then(Option::as_deref);
        check_certificate(s, req, identity, cert, tenant, assertion, &header, &claims)
    }
}

/// A workload identity's assertion: one of this run's federated tokens whose
/// issuer, subject and audience match the identity's federated credential.
fn check_federated(
    s: &Shared,
    req: &Req,
    identity: &IdentityConfig,
    assertion: &str,
    claims: &Value,
) -> Result<(), Response<Body>> {
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let aud = match claims.get("aud") {
        Some(Value::String(a)) => a.clone(),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("").to_owned(),
        _ => String::new(),
    };
    match s.signer.verify(assertion, now_secs()) {
        Ok(_) => {}
        Err(TokenError::Expired | TokenError::NotYetValid) => return Err(expired(s, req, claims)),
        Err(TokenError::BadSignature | TokenError::Malformed) => {
            return Err(error(
                s,
                req,
                401,
                "invalid_client",
                50013,
                "Assertion failed signature validation. [Reason - The key was not found.]",
            ));
        }
    }
    if identity.kind != IdentityKind::Workload || iss != identity.issuer || sub != identity.subject
    {
        return Err(error(
            s,
            req,
            400,
            "invalid_request",
            70021,
            &format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{aud}'. https://docs.microsoft.com/azure/active-directory/develop/workload-identity-federation"
            ),
        ));
    }
    if aud != identity.audience {
        return Err(error(
            s,
            req,
            400,
            "invalid_request",
            700_212,
            &format!(
                "No matching federated identity record found for presented assertion audience '{aud}'. https://docs.microsoft.com/azure/active-directory/develop/workload-identity-federation"
            ),
        ));
    }
    Ok(())
}

/// Decodes a thumbprint header in base64url (the documented form) or in
/// padded standard base64 (what some SDKs send).
fn thumbprint_bytes(v: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    b64url_decode(v).or_else(|| base64::engine::general_purpose::STANDARD.decode(v).ok())
}

/// A certificate credential: an RS256 (or PS256, which MSAL Python prefers)
/// JWT signed by the key of the service principal's certificate.
#[allow(clippy::too_many_arguments)]
fn check_certificate(
    s: &Shared,
    req: &Req,
    identity: &IdentityConfig,
    cert: Option<&[u8]>,
    tenant: &str,
    assertion: &str,
    header: &Value,
    claims: &Value,
) -> Result<(), Response<Body>> {
    let presented_sha1 = header.get("x5t").and_then(Value::as_str);
    let presented_sha256 = header.get("x5t#S256").and_then(Value::as_str);
    let bad_key = |thumb: &str| {
        error(
            s,
            req,
            401,
            "invalid_client",
            700_027,
            &format!(
                "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{thumb}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                identity.client_id
            ),
        )
    };
    let Some(cert) = cert else {
        return Err(bad_key(presented_sha1.or(presented_sha256).unwrap_or("")));
    };
    let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert);
    let sha256 = digest::digest(&digest::SHA256, cert);
    let thumb_ok = presented_sha256
        .and_then(thumbprint_bytes)
        .map(|b| b == sha256.as_ref())
        .or_else(|| {
            presented_sha1
                .and_then(thumbprint_bytes)
                .map(|b| b == sha1.as_ref())
        })
        .unwrap_or(false);
    if !thumb_ok {
        return Err(bad_key(presented_sha1.or(presented_sha256).unwrap_or("")));
    }
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        _ => return Err(bad_key(&b64url(sha1.as_ref()))),
    };
    let Some((signed, sig)) = assertion.rsplit_once('.') else {
        return Err(bad_key(&b64url(sha1.as_ref())));
    };
    let sig = b64url_decode(sig).unwrap_or_default();
    let der = rustls::pki_types::CertificateDer::from(cert);
    let verified = webpki::EndEntityCert::try_from(&der)
        .ok()
        .is_some_and(|ee| ee.verify_signature(alg, signed.as_bytes(), &sig).is_ok());
    if !verified {
        return Err(bad_key(&b64url(sha1.as_ref())));
    }
    let now = now_secs();
    match numeric_date(claims, "exp") {
        Some(exp) if exp > now => {}
        _ => return Err(expired(s, req, claims)),
    }
    if numeric_date(claims, "nbf").is_some_and(|nbf| nbf > now + 300) {
        return Err(expired(s, req, claims));
    }
    let want_aud = format!("{}/{tenant}/oauth2/v2.0/token", s.urls.authority);
    let aud = claims.get("aud").and_then(Value::as_str).unwrap_or("");
    if !aud.eq_ignore_ascii_case(&want_aud) {
        return Err(error(
            s,
            req,
            400,
            "invalid_client",
            700_212,
            &format!("The audience claim value '{aud}' is invalid; expected '{want_aud}'."),
        ));
    }
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    if !iss.eq_ignore_ascii_case(&identity.client_id)
        || !sub.eq_ignore_ascii_case(&identity.client_id)
    {
        return Err(error(
            s,
            req,
            400,
            "invalid_client",
            700_023,
            "Client assertion issuer and subject must be the client id.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelope_matches_the_recording() {
        let v = error_json(
            "invalid_client",
            7_000_215,
            "Invalid client secret provided.",
            Some("c-1"),
            "https://127.0.0.1:1",
        );
        assert_eq!(v["error"], "invalid_client");
        assert!(v["error_description"].as_str().is_some_and(|d| {
            d.starts_with("AADSTS7000215: Invalid client secret provided.\r\nTrace ID: ")
        }));
        assert_eq!(v["error_codes"], json!([7_000_215]));
        assert_eq!(v["correlation_id"], "c-1");
        assert_eq!(v["error_uri"], "https://127.0.0.1:1/error?code=7000215");
        for k in ["timestamp", "trace_id"] {
            assert!(v[k].is_string(), "{k}");
        }
    }

    #[test]
    fn constant_time_eq_table() {
        for (a, b, want) in [
            ("", "", true),
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("ab", "abc", false),
        ] {
            assert_eq!(constant_time_eq(a, b), want, "{a} {b}");
        }
    }

    #[test]
    fn thumbprints_in_both_encodings() {
        assert_eq!(thumbprint_bytes("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(thumbprint_bytes("/+8="), Some(vec![0xff, 0xef]));
    }
}
