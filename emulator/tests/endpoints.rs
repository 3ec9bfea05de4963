//! One test per endpoint behaviour, against an in-process emulator
//! ([`Emulator::start`]) and a reqwest client (rustls on ring) that trusts only
//! the run's CA. Expected bodies and headers come from the recordings in
//! `shared/fixtures/azure-recordings`.

// Test helpers state their expectations with expect(); a failure is the test's.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kvrun_emulator::{Config, Emulator, fingerprint};
use reqwest::{Client, Method};
use serde_json::{Value, json};

const TENANT: &str = "72f988bf-0000-4000-8000-0000000000bb";
const UAMI: &str = "22222222-0000-4000-8000-000000000002";
const SP: &str = "22222222-0000-4000-8000-000000000004";
const WL: &str = "22222222-0000-4000-8000-000000000005";
const WL_OTHER: &str = "22222222-0000-4000-8000-000000000006";
const WL_EXPIRED: &str = "22222222-0000-4000-8000-000000000007";
const CERT_SP: &str = "22222222-0000-4000-8000-000000000008";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn config(extra: &str) -> Config {
    let text = format!(
        r#"
tenant_id = "{TENANT}"
[[vault]]
name = "demo"
[[vault.secret]]
name = "db-password"
value = "s3cret"
content_type = "text/plain"
tags = {{ owner = "team-a" }}
[[vault.secret]]
name = "rotated"
[[vault.secret.version]]
id = "0123456789abcdef0123456789abcdef"
value = "old"
[[vault.secret.version]]
value = "new"
[[vault.secret]]
name = "off"
value = "x"
enabled = false
[[vault]]
name = "policy-vault"
authorization = "access-policy"

[[identity]]
name = "system"
kind = "system-assigned"
[[identity]]
name = "uami"
kind = "user-assigned"
client_id = "{UAMI}"
object_id = "33333333-0000-4000-8000-000000000002"
resource_id = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami"
[[identity]]
name = "sp"
kind = "service-principal"
client_id = "{SP}"
secret = "right"
[[identity]]
name = "wl"
kind = "workload"
client_id = "{WL}"
[[identity]]
name = "wl-other"
kind = "workload"
client_id = "{WL_OTHER}"
subject = "system:serviceaccount:other:app"
[[identity]]
name = "wl-expired"
kind = "workload"
client_id = "{WL_EXPIRED}"
token_lifetime_secs = -60
[[identity]]
name = "cert-sp"
kind = "service-principal"
client_id = "{CERT_SP}"
certificate = "{cert}"

[[grant]]
identity = "system"
vault = "demo"
permissions = ["all"]
[[grant]]
identity = "uami"
vault = "demo"
permissions = ["list"]
[[grant]]
identity = "sp"
vault = "demo"
permissions = ["get"]
{extra}
"#,
        cert = fixture("sp-cert.pem")
    );
    Config::from_toml(&text, "test.toml").expect("test config")
}

fn start(extra: &str) -> Emulator {
    Emulator::start(config(extra)).expect("emulator starts")
}

fn client(emu: &Emulator) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(emu.ca_pem_path()).expect("ca.pem");
    let ca = reqwest::Certificate::from_pem(&pem).expect("ca parses");
    Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    version: reqwest::Version,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

async fn send(
    c: &Client,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Resp {
    let mut rb = c.request(method, url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b);
    }
    let r = rb.send().await.expect("request");
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        version: r.version(),
        text: r.text().await.expect("body"),
    }
}

async fn get(c: &Client, url: &str, headers: &[(&str, &str)]) -> Resp {
    send(c, Method::GET, url, headers, None).await
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("jwt");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("claims")
}

async fn imds(c: &Client, emu: &Emulator, query: &str) -> Resp {
    get(
        c,
        &format!("{}/metadata/identity/oauth2/token?{query}", emu.imds_host()),
        &[("Metadata", "true")],
    )
    .await
}

/// An IMDS token for `resource` as the given identity selector (`""` = system).
async fn mi_token(c: &Client, emu: &Emulator, resource: &str, selector: &str) -> String {
    let q = form(&[("api-version", "2018-02-01"), ("resource", resource)]);
    let r = imds(c, emu, &format!("{q}{selector}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["access_token"].as_str().expect("token").to_owned()
}

async fn vault_token(c: &Client, emu: &Emulator) -> String {
    mi_token(c, emu, &emu.vault_url("demo").expect("demo"), "").await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// --- IMDS -------------------------------------------------------------------

#[tokio::test]
async fn imds_token_has_every_number_as_a_string() {
    let emu = start("");
    let c = client(&emu);
    let r = imds(
        &c,
        &emu,
        "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json; charset=utf-8");
    let v = r.json();
    for k in ["expires_in", "expires_on", "ext_expires_in", "not_before"] {
        let s = v[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} not a string: {v}"));
        assert!(s.parse::<i64>().is_ok(), "{k}={s}");
    }
    assert_eq!(v["resource"], "https://vault.azure.net");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["refresh_token"], "");
    let system = emu.client_id("system").expect("system");
    assert_eq!(v["client_id"], system.as_str());
    let cl = claims(v["access_token"].as_str().expect("token"));
    assert_eq!(cl["aud"], "https://vault.azure.net");
    assert_eq!(cl["appid"], system.as_str());
    assert_eq!(cl["tid"], TENANT);
    assert_eq!(cl["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(cl["idtyp"], "app");
}

#[tokio::test]
async fn imds_requires_the_metadata_header() {
    let emu = start("");
    let c = client(&emu);
    let url = format!("{}/metadata/identity/oauth2/token", emu.imds_host());
    let r = get(&c, &url, &[]).await;
    // mi-imds-400-missing-metadata-header-go-2024.json
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );
    let r = imds(&c, &emu, "resource=x").await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("api-version"));
    let r = imds(&c, &emu, "api-version=2018-02-01").await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("resource"));
}

#[tokio::test]
async fn imds_selects_user_assigned_identities() {
    let emu = start("");
    let c = client(&emu);
    let rid = emu.resource_id("uami").expect("resource id");
    let oid = emu.object_id("uami").expect("object id");
    for selector in [
        format!("&client_id={UAMI}"),
        format!("&object_id={oid}"),
        format!("&{}", form(&[("msi_res_id", &rid)])),
    ] {
        let t = mi_token(&c, &emu, "https://r", &selector).await;
        let cl = claims(&t);
        assert_eq!(cl["appid"], UAMI, "{selector}");
        assert_eq!(cl["xms_mirid"], rid.as_str());
    }
    let r = imds(
        &c,
        &emu,
        "api-version=2018-02-01&resource=r&client_id=nobody",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
    // A service principal is not a managed identity.
    let r = imds(
        &c,
        &emu,
        &format!("api-version=2018-02-01&resource=r&client_id={SP}"),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn imds_without_a_system_identity_says_identity_not_found() {
    let emu = Emulator::start(Config::from_toml("", "empty.toml").expect("empty")).expect("start");
    let c = client(&emu);
    let r = imds(&c, &emu, "api-version=2018-02-01&resource=r").await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("Identity not found"));
}

// --- App Service ------------------------------------------------------------

#[tokio::test]
async fn app_service_2019_checks_the_identity_header() {
    let emu = start("");
    let c = client(&emu);
    let url = format!(
        "{}?api-version=2019-08-01&resource=https://vault.azure.net",
        emu.identity_endpoint()
    );
    let header = emu.identity_header();
    let r = get(&c, &url, &[("X-IDENTITY-HEADER", &header)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert!(
        v["expires_on"]
            .as_str()
            .is_some_and(|s| s.parse::<i64>().is_ok()),
        "{v}"
    );
    assert_eq!(v["resource"], "https://vault.azure.net");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(
        v["client_id"],
        emu.client_id("system").expect("system").as_str()
    );
    assert!(v.get("expires_in").is_none());

    let r = get(&c, &url, &[]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing"))
    );
    let r = get(&c, &url, &[("X-IDENTITY-HEADER", "wrong")]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid"))
    );

    for selector in [
        format!("client_id={UAMI}"),
        format!("principal_id={}", emu.object_id("uami").expect("oid")),
        format!("object_id={}", emu.object_id("uami").expect("oid")),
        form(&[("mi_res_id", &emu.resource_id("uami").expect("rid"))]),
    ] {
        let r = get(
            &c,
            &format!("{url}&{selector}"),
            &[("X-IDENTITY-HEADER", &header)],
        )
        .await;
        assert_eq!(r.status, 200, "{selector}: {}", r.text);
        assert_eq!(r.json()["client_id"], UAMI);
    }
}

#[tokio::test]
async fn app_service_2017_uses_secret_clientid_and_a_date_string() {
    let emu = start("");
    let c = client(&emu);
    let url = format!(
        "{}?api-version=2017-09-01&resource=https://vault.azure.net",
        emu.identity_endpoint()
    );
    let header = emu.identity_header();
    let r = get(
        &c,
        &format!("{url}&clientid={UAMI}"),
        &[("Secret", &header)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    // mi-appservice-token-200-api2017-09-01: "05/22/2021 17:14:33 +00:00"
    let e = v["expires_on"].as_str().expect("string");
    let b = e.as_bytes();
    assert!(
        e.len() == 26 && b[2] == b'/' && b[5] == b'/' && e.ends_with(" +00:00"),
        "{e}"
    );
    assert_eq!(v["client_id"], UAMI);
    // The 2019 header does not authenticate the 2017 protocol.
    let r = get(&c, &url, &[("X-IDENTITY-HEADER", &header)]).await;
    assert_eq!(r.status, 400);
}

// --- Entra ID ---------------------------------------------------------------

fn token_url(emu: &Emulator, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/token", emu.authority_host())
}

async fn post_token(c: &Client, emu: &Emulator, tenant: &str, pairs: &[(&str, &str)]) -> Resp {
    send(
        c,
        Method::POST,
        &token_url(emu, tenant),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form(pairs)),
    )
    .await
}

fn assert_aadsts(r: &Resp, status: u16, error: &str, code: u64) {
    assert_eq!(r.status, status, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], error, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("AADSTS{code}: "))),
        "{v}"
    );
    assert_eq!(v["error_codes"], json!([code]));
    for k in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(v[k].is_string(), "{k} in {v}");
    }
}

#[tokio::test]
async fn entra_client_secret() {
    let emu = start("");
    let c = client(&emu);
    let scope = "https://vault.azure.net/.default";
    let base = [
        ("grant_type", "client_credentials"),
        ("client_id", SP),
        ("scope", scope),
    ];
    let r = post_token(
        &c,
        &emu,
        TENANT,
        &[&base[..], &[("client_secret", "right")]].concat(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    // aad-token-200-*: numbers, not strings.
    assert_eq!(v["token_type"], "Bearer");
    assert!(
        v["expires_in"].is_i64() && v["ext_expires_in"].is_i64(),
        "{v}"
    );
    let cl = claims(v["access_token"].as_str().expect("token"));
    assert_eq!(cl["aud"], "https://vault.azure.net");
    assert_eq!(cl["appid"], SP);

    let r = post_token(
        &c,
        &emu,
        TENANT,
        &[&base[..], &[("client_secret", "wrong")]].concat(),
    )
    .await;
    assert_aadsts(&r, 401, "invalid_client", 7_000_215);
    let r = post_token(&c, &emu, TENANT, &base).await;
    assert_aadsts(&r, 401, "invalid_client", 7_000_218);
    let r = post_token(
        &c,
        &emu,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("scope", scope),
            ("client_secret", "x"),
        ],
    )
    .await;
    assert_aadsts(&r, 400, "unauthorized_client", 700_016);
    assert!(r.text.contains(&format!(
        "'nobody' was not found in the directory '{TENANT}'"
    )));
    let r = post_token(
        &c,
        &emu,
        "other-tenant",
        &[&base[..], &[("client_secret", "right")]].concat(),
    )
    .await;
    assert_aadsts(&r, 400, "invalid_request", 90002);
    let r = post_token(&c, &emu, TENANT, &[("client_id", SP), ("scope", scope)]).await;
    assert_aadsts(&r, 400, "invalid_request", 900_144);
    assert!(r.text.contains("'grant_type'"));
    let r = post_token(
        &c,
        &emu,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SP),
            ("scope", "https://vault.azure.net"),
            ("client_secret", "right"),
        ],
    )
    .await;
    assert_aadsts(&r, 400, "invalid_scope", 1_002_012);
}

#[tokio::test]
async fn entra_workload_identity_federated_token() {
    let emu = start("");
    let c = client(&emu);
    let assertion = |name: &str| {
        std::fs::read_to_string(emu.federated_token_file(name).expect("file")).expect("token file")
    };
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let request = |client_id: &'static str, assertion: String| {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", client_id.to_owned()),
            ("scope", "https://vault.azure.net/.default".to_owned()),
            ("client_assertion_type", jwt_bearer.to_owned()),
            ("client_assertion", assertion),
        ]
    };
    let to_pairs = |v: &Vec<(&'static str, String)>| {
        v.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    };
    let run = |pairs: Vec<(&'static str, String)>| {
        let c = c.clone();
        let url = token_url(&emu, TENANT);
        async move {
            let body = form(
                &pairs
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect::<Vec<_>>(),
            );
            send(
                &c,
                Method::POST,
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(body),
            )
            .await
        }
    };
    let ok = run(to_pairs(&request(WL, assertion("wl")))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        claims(ok.json()["access_token"].as_str().expect("token"))["appid"],
        WL
    );
    // The federated token names the default subject; wl-other expects another.
    let r = run(to_pairs(&request(WL_OTHER, assertion("wl")))).await;
    assert_aadsts(&r, 400, "invalid_request", 70021);
    let r = run(to_pairs(&request(WL_EXPIRED, assertion("wl-expired")))).await;
    assert_aadsts(&r, 400, "invalid_client", 700_024);
    // A token from another run does not verify.
    let other = start("");
    let foreign =
        std::fs::read_to_string(other.federated_token_file("wl").expect("file")).expect("read");
    let r = run(to_pairs(&request(WL, foreign))).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn entra_certificate_assertion() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

    let emu = start("");
    let c = client(&emu);
    let cert = CertificateDer::from_pem_file(fixture("sp-cert.pem")).expect("cert");
    let key = PrivatePkcs8KeyDer::from_pem_file(fixture("sp-key.pem")).expect("key");
    let pair = ring::signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).expect("rsa key");
    let x5t = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &cert,
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sign = |header: Value, claims: Value| {
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            msg.as_bytes(),
            &mut sig,
        )
        .expect("sign");
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": x5t});
    let good_claims = json!({"aud": token_url(&emu, TENANT), "iss": CERT_SP, "sub": CERT_SP,
        "jti": "1", "nbf": now, "exp": now + 300});
    let attempt = |assertion: String| {
        let c = c.clone();
        let url = token_url(&emu, TENANT);
        async move {
            let body = form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CERT_SP),
                ("scope", "https://vault.azure.net/.default"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ]);
            send(
                &c,
                Method::POST,
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(body),
            )
            .await
        }
    };
    let r = attempt(sign(header.clone(), good_claims.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        claims(r.json()["access_token"].as_str().expect("token"))["appid"],
        CERT_SP
    );

    let mut expired = good_claims.clone();
    expired["exp"] = json!(now - 10);
    assert_aadsts(
        &attempt(sign(header.clone(), expired)).await,
        400,
        "invalid_client",
        700_024,
    );
    let mut wrong_aud = good_claims.clone();
    wrong_aud["aud"] = json!("https://login.microsoftonline.com/x/oauth2/v2.0/token");
    assert_eq!(attempt(sign(header.clone(), wrong_aud)).await.status, 400);
    let wrong_thumb = json!({"alg": "RS256", "typ": "JWT", "x5t": "AAAA"});
    assert_aadsts(
        &attempt(sign(wrong_thumb, good_claims.clone())).await,
        401,
        "invalid_client",
        700_027,
    );
    // Tampered claims break the signature.
    let good = sign(header, good_claims);
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(
        json!({"aud": token_url(&emu, TENANT), "iss": CERT_SP, "sub": CERT_SP, "exp": now + 9999})
            .to_string(),
    );
    parts[1] = &forged;
    assert_aadsts(
        &attempt(parts.join(".")).await,
        401,
        "invalid_client",
        700_027,
    );
}

#[tokio::test]
async fn entra_openid_configuration_points_at_the_emulator() {
    let emu = start("");
    let c = client(&emu);
    let a = emu.authority_host();
    let r = get(
        &c,
        &format!("{a}/{TENANT}/v2.0/.well-known/openid-configuration"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["token_endpoint"],
        format!("{a}/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(
        v["authorization_endpoint"],
        format!("{a}/{TENANT}/oauth2/v2.0/authorize")
    );
    assert_eq!(v["issuer"], format!("{a}/{TENANT}/v2.0"));
    let r = get(
        &c,
        &format!("{a}/nope/v2.0/.well-known/openid-configuration"),
        &[],
    )
    .await;
    assert_aadsts(&r, 400, "invalid_request", 90002);
    let r = get(
        &c,
        &format!("{a}/common/discovery/instance?api-version=1.1"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["tenant_discovery_endpoint"]
            .as_str()
            .is_some_and(|u| u.starts_with(&a))
    );
}

// --- Key Vault --------------------------------------------------------------

fn secret_url(emu: &Emulator, path: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!(
        "{}{path}{sep}api-version=2025-07-01",
        emu.vault_url("demo").expect("demo")
    )
}

#[tokio::test]
async fn vault_challenge_on_a_request_without_a_token() {
    let emu = start("");
    let c = client(&emu);
    let vault = emu.vault_url("demo").expect("demo");
    let r = get(&c, &secret_url(&emu, "/secrets/db-password/"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        format!(
            "Bearer authorization=\"{}/{TENANT}\", resource=\"{vault}\"",
            emu.authority_host()
        )
    );
    assert_eq!(
        r.json(),
        json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token."}})
    );
    assert_eq!(r.header("content-type"), "application/json; charset=utf-8");
    let id = r.header("x-ms-request-id");
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);
    assert!(!r.header("x-ms-keyvault-service-version").is_empty());
    assert_eq!(r.header("x-ms-keyvault-region"), "westus");
    // Served over HTTP/2 by ALPN.
    assert_eq!(r.version, reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn vault_rejects_bad_tokens_with_401() {
    let emu = start("");
    let c = client(&emu);
    let url = secret_url(&emu, "/secrets/db-password");
    // Token for another audience.
    let other = mi_token(&c, &emu, "https://vault.azure.net", "").await;
    let r = get(&c, &url, &[("authorization", &bearer(&other))]).await;
    assert_eq!(r.status, 401);
    assert!(r.text.contains("AKV10022"), "{}", r.text);
    assert!(
        r.header("www-authenticate")
            .starts_with("Bearer authorization=")
    );
    // Trailing slash on the audience is fine.
    let vault = emu.vault_url("demo").expect("demo");
    let slash = mi_token(&c, &emu, &format!("{vault}/"), "").await;
    assert_eq!(
        get(&c, &url, &[("authorization", &bearer(&slash))])
            .await
            .status,
        200
    );
    // Token from another run: signature does not verify.
    let other_emu = start("");
    let foreign = mi_token(&c, &other_emu, &vault, "").await;
    let r = get(&c, &url, &[("authorization", &bearer(&foreign))]).await;
    assert_eq!(r.status, 401);
    assert!(r.text.contains("AKV10046"), "{}", r.text);
    let r = get(&c, &url, &[("authorization", "Bearer not.a.jwt")]).await;
    assert_eq!(r.status, 401);
    let r = get(&c, &url, &[("authorization", "Basic abc")]).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn vault_get_set_and_versions() {
    let emu = start("");
    let c = client(&emu);
    let auth = bearer(&vault_token(&c, &emu).await);
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let vault = emu.vault_url("demo").expect("demo");

    for path in [
        "/secrets/db-password",
        "/secrets/db-password/",
        "/secrets/DB-Password",
    ] {
        let r = get(&c, &secret_url(&emu, path), &h).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let v = r.json();
        assert_eq!(v["value"], "s3cret");
        assert_eq!(v["contentType"], "text/plain");
        assert_eq!(v["tags"], json!({"owner": "team-a"}));
        let a = &v["attributes"];
        assert_eq!(a["enabled"], true);
        assert!(a["created"].is_i64() && a["updated"].is_i64());
        assert_eq!(a["recoveryLevel"], "Recoverable+Purgeable");
        assert_eq!(a["recoverableDays"], 90);
        let id = v["id"].as_str().expect("id");
        let version = id
            .strip_prefix(&format!("{vault}/secrets/db-password/"))
            .expect("id shape");
        assert!(
            version.len() == 32
                && version
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    let r = get(&c, &secret_url(&emu, "/secrets/rotated"), &h).await;
    assert_eq!(r.json()["value"], "new");
    let r = get(
        &c,
        &secret_url(&emu, "/secrets/rotated/0123456789abcdef0123456789abcdef"),
        &h,
    )
    .await;
    assert_eq!(r.json()["value"], "old");
    assert_eq!(
        r.json()["id"],
        format!("{vault}/secrets/rotated/0123456789abcdef0123456789abcdef")
    );

    let body = json!({"value": "v1", "contentType": "ct", "tags": {"k": "v"}, "attributes": {"enabled": true, "exp": 2_000_000_000, "nbf": 1_000}});
    let r = send(
        &c,
        Method::PUT,
        &secret_url(&emu, "/secrets/new-one"),
        &h,
        Some(body.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let created = r.json();
    assert_eq!(created["value"], "v1");
    assert_eq!(created["attributes"]["exp"], 2_000_000_000);
    assert_eq!(created["attributes"]["nbf"], 1_000);
    let r = send(
        &c,
        Method::PUT,
        &secret_url(&emu, "/secrets/new-one"),
        &h,
        Some(json!({"value": "v2"}).to_string()),
    )
    .await;
    let second = r.json();
    assert_ne!(created["id"], second["id"]);
    assert!(second.get("contentType").is_none() && second.get("tags").is_none());
    let r = get(
        &c,
        created["id"]
            .as_str()
            .map(|id| format!("{id}?api-version=7.4"))
            .as_deref()
            .expect("id"),
        &h,
    )
    .await;
    assert_eq!(r.json()["value"], "v1");

    let r = send(
        &c,
        Method::PUT,
        &secret_url(&emu, "/secrets/bad_name"),
        &h,
        Some(json!({"value": "x"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "BadParameter");
    let r = send(
        &c,
        Method::PUT,
        &secret_url(&emu, "/secrets/x"),
        &h,
        Some("{}".to_owned()),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn vault_requires_an_api_version() {
    let emu = start("");
    let c = client(&emu);
    let url = format!(
        "{}/secrets/db-password",
        emu.vault_url("demo").expect("demo")
    );
    let r = get(&c, &url, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "BadParameter");
}

#[tokio::test]
async fn vault_404_disabled_403_and_no_grant_403() {
    let emu = start("");
    let c = client(&emu);
    let auth = bearer(&vault_token(&c, &emu).await);
    let h = [("authorization", auth.as_str())];
    let r = get(&c, &secret_url(&emu, "/secrets/missing/"), &h).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "SecretNotFound");
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| {
        m.starts_with(
        "A secret with (name/id) missing was not found in this key vault. If you recently deleted"
    )
    }));
    let r = get(
        &c,
        &secret_url(
            &emu,
            "/secrets/db-password/ffffffffffffffffffffffffffffffff",
        ),
        &h,
    )
    .await;
    assert_eq!(r.status, 404);
    // kv-403-secret-disabled-get-api7.6-preview.1-net-2024.json
    let r = get(&c, &secret_url(&emu, "/secrets/off"), &h).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"error": {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret.", "innererror": {"code": "SecretDisabled"}}})
    );

    // uami may list but not get (RBAC vault).
    let vault = emu.vault_url("demo").expect("demo");
    let uami = bearer(&mi_token(&c, &emu, &vault, &format!("&client_id={UAMI}")).await);
    let r = get(
        &c,
        &secret_url(&emu, "/secrets/db-password"),
        &[("authorization", &uami)],
    )
    .await;
    assert_eq!(r.status, 403);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "Forbidden");
    assert_eq!(e["innererror"]["code"], "ForbiddenByRbac");
    let m = e["message"].as_str().expect("message");
    assert!(m.contains(&format!("appid={UAMI};oid=")), "{m}");
    assert!(
        m.contains("Microsoft.KeyVault/vaults/secrets/getSecret/action"),
        "{m}"
    );
    assert_eq!(
        get(
            &c,
            &secret_url(&emu, "/secrets"),
            &[("authorization", &uami)]
        )
        .await
        .status,
        200
    );

    // Access-policy vault, no policy for the system identity.
    let pv = emu.vault_url("policy-vault").expect("policy vault");
    let t = bearer(&mi_token(&c, &emu, &pv, "").await);
    let r = get(
        &c,
        &format!("{pv}/secrets/x?api-version=7.4"),
        &[("authorization", &t)],
    )
    .await;
    assert_eq!(r.status, 403);
    let e = &r.json()["error"];
    assert_eq!(e["innererror"]["code"], "AccessDenied");
    assert!(e["message"].as_str().is_some_and(|m| m.contains(
        "does not have secrets get permission on key vault 'policy-vault;location=westus'"
    )));
}

#[tokio::test]
async fn vault_lists_page_with_next_links() {
    let emu = start("");
    let c = client(&emu);
    let auth = bearer(&vault_token(&c, &emu).await);
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    for i in 0..4 {
        let body = json!({"value": format!("v{i}")}).to_string();
        assert_eq!(
            send(
                &c,
                Method::PUT,
                &secret_url(&emu, &format!("/secrets/p{i}")),
                &h,
                Some(body)
            )
            .await
            .status,
            200
        );
    }
    let vault = emu.vault_url("demo").expect("demo");
    let mut url = secret_url(&emu, "/secrets?maxresults=2");
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&c, &url, &h).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        let v = r.json();
        pages += 1;
        for item in v["value"].as_array().expect("array") {
            assert!(
                item.get("value").is_none(),
                "list items carry no value: {item}"
            );
            let id = item["id"].as_str().expect("id");
            names.push(
                id.strip_prefix(&format!("{vault}/secrets/"))
                    .expect("base id")
                    .to_owned(),
            );
        }
        match &v["nextLink"] {
            Value::Null => break,
            Value::String(next) => {
                assert!(
                    next.starts_with(&format!(
                        "{vault}/secrets?api-version=2025-07-01&$skiptoken="
                    )),
                    "{next}"
                );
                assert!(next.ends_with("&maxresults=2"), "{next}");
                url = next.clone();
            }
            other => panic!("nextLink {other}"),
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(
        names,
        ["db-password", "off", "p0", "p1", "p2", "p3", "rotated"]
    );

    let r = get(
        &c,
        &secret_url(&emu, "/secrets/rotated/versions?maxresults=1"),
        &h,
    )
    .await;
    let v = r.json();
    assert_eq!(v["value"].as_array().map(Vec::len), Some(1));
    assert!(
        v["value"][0]["id"]
            .as_str()
            .is_some_and(|id| id.ends_with("/secrets/rotated/0123456789abcdef0123456789abcdef"))
    );
    let next = v["nextLink"].as_str().expect("next").to_owned();
    assert!(next.contains("/secrets/rotated/versions?"));
    let last = get(&c, &next, &h).await.json();
    assert_eq!(last["nextLink"], Value::Null);

    assert_eq!(
        get(&c, &secret_url(&emu, "/secrets?maxresults=26"), &h)
            .await
            .status,
        400
    );
    assert_eq!(
        get(&c, &secret_url(&emu, "/secrets?$skiptoken=garbage"), &h)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn vault_update_delete_recover_purge() {
    let emu = start("");
    let c = client(&emu);
    let auth = bearer(&vault_token(&c, &emu).await);
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let patch = json!({"contentType": "application/json", "tags": {"b": "2"}, "attributes": {"enabled": false, "exp": 1_900_000_000}});
    let r = send(
        &c,
        Method::PATCH,
        &secret_url(&emu, "/secrets/db-password/"),
        &h,
        Some(patch.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert!(v.get("value").is_none());
    assert_eq!(v["contentType"], "application/json");
    assert_eq!(v["attributes"]["enabled"], false);
    assert_eq!(v["attributes"]["exp"], 1_900_000_000);
    assert_eq!(
        get(&c, &secret_url(&emu, "/secrets/db-password"), &h)
            .await
            .status,
        403
    );
    let enable = json!({"attributes": {"enabled": true}}).to_string();
    let r = send(
        &c,
        Method::PATCH,
        &secret_url(&emu, "/secrets/rotated/0123456789abcdef0123456789abcdef"),
        &h,
        Some(enable),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        &c,
        Method::PATCH,
        &secret_url(&emu, "/secrets/nope/"),
        &h,
        Some("{}".to_owned()),
    )
    .await;
    assert_eq!(r.status, 404);

    let r = send(
        &c,
        Method::DELETE,
        &secret_url(&emu, "/secrets/rotated"),
        &h,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = r.json();
    let vault = emu.vault_url("demo").expect("demo");
    assert_eq!(d["recoveryId"], format!("{vault}/deletedsecrets/rotated"));
    assert!(d["deletedDate"].is_i64() && d["scheduledPurgeDate"].is_i64());
    assert_eq!(
        get(&c, &secret_url(&emu, "/secrets/rotated"), &h)
            .await
            .status,
        404
    );
    assert_eq!(
        get(&c, &secret_url(&emu, "/deletedsecrets/rotated"), &h)
            .await
            .status,
        200
    );
    let r = get(&c, &secret_url(&emu, "/deletedsecrets/nothing"), &h).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        "Deleted Secret not found: nothing"
    );
    let put = Some(json!({"value": "x"}).to_string());
    assert_eq!(
        send(
            &c,
            Method::PUT,
            &secret_url(&emu, "/secrets/rotated"),
            &h,
            put
        )
        .await
        .status,
        409
    );
    let listed = get(&c, &secret_url(&emu, "/deletedsecrets"), &h)
        .await
        .json();
    assert_eq!(listed["value"].as_array().map(Vec::len), Some(1));
    let r = send(
        &c,
        Method::POST,
        &secret_url(&emu, "/deletedsecrets/rotated/recover"),
        &h,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        get(&c, &secret_url(&emu, "/secrets/rotated"), &h)
            .await
            .json()["value"],
        "new"
    );
    assert_eq!(
        send(
            &c,
            Method::DELETE,
            &secret_url(&emu, "/secrets/rotated"),
            &h,
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        send(
            &c,
            Method::DELETE,
            &secret_url(&emu, "/deletedsecrets/rotated"),
            &h,
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        get(&c, &secret_url(&emu, "/deletedsecrets/rotated"), &h)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn vault_tls_modes_fail_client_verification() {
    let emu = start(
        r#"
[[vault]]
name = "expired-tls"
tls = "expired"
[[vault]]
name = "wrong-host"
tls = "wrong-host"
[[vault]]
name = "untrusted"
tls = "untrusted"
"#,
    );
    let c = client(&emu);
    for name in ["expired-tls", "wrong-host", "untrusted"] {
        let url = format!(
            "{}/secrets/x?api-version=7.4",
            emu.vault_url(name).expect("vault")
        );
        let e = c.get(&url).send().await.expect_err(name);
        assert!(e.is_connect(), "{name}: {e:?}");
    }
    assert_eq!(
        get(&c, &secret_url(&emu, "/secrets/x"), &[]).await.status,
        401
    );
}

// --- Faults, throttling, latency --------------------------------------------

#[tokio::test]
async fn faults_status_retry_after_and_windows() {
    let emu = start(
        r#"
[[fault]]
endpoint = "imds"
first = 2
status = 410
retry_after = "3"
[[fault]]
endpoint = "vault:demo"
path = "/secrets/db-password"
first = 1
status = 429
retry_after_ms = 1500
[[fault]]
endpoint = "vault:demo"
path = "/secrets/rotated"
first = 1
status = 503
retry_after_http_date = 2
[[fault]]
endpoint = "app-service"
for_ms = 60000
status = 500
"#,
    );
    let c = client(&emu);
    for _ in 0..2 {
        let r = imds(&c, &emu, "api-version=2018-02-01&resource=r").await;
        assert_eq!(r.status, 410);
        assert_eq!(r.header("retry-after"), "3");
        assert_eq!(r.json()["error"], "gone");
    }
    assert_eq!(
        imds(&c, &emu, "api-version=2018-02-01&resource=r")
            .await
            .status,
        200
    );
    let r = get(&c, &secret_url(&emu, "/secrets/db-password"), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ms-retry-after-ms"), "1500");
    assert_eq!(r.json()["error"]["code"], "Throttled");
    assert!(!r.header("x-ms-request-id").is_empty());
    assert_eq!(
        get(&c, &secret_url(&emu, "/secrets/db-password"), &[])
            .await
            .status,
        401
    );
    let r = get(&c, &secret_url(&emu, "/secrets/rotated"), &[]).await;
    assert_eq!(r.status, 503);
    assert!(httpdate::parse_http_date(r.header("retry-after")).is_ok());
    let url = format!(
        "{}?api-version=2019-08-01&resource=r",
        emu.identity_endpoint()
    );
    let r = get(&c, &url, &[("X-IDENTITY-HEADER", &emu.identity_header())]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["statusCode"], 500);
}

#[tokio::test]
async fn faults_break_connections_and_bodies() {
    let emu = start(
        r#"
[[fault]]
endpoint = "vault:demo"
path = "/secrets/reset"
action = "reset"
[[fault]]
endpoint = "vault:demo"
path = "/secrets/midbody"
action = "reset-mid-body"
[[fault]]
endpoint = "vault:demo"
path = "/secrets/malformed"
action = "malformed-json"
[[fault]]
endpoint = "imds"
first = 1
action = "truncated-json"
[[fault]]
endpoint = "vault:demo"
path = "/secrets/big"
action = "oversized-body"
size_bytes = 300000
[[fault]]
endpoint = "vault:demo"
path = "/secrets/slow"
action = "slow-body"
delay_ms = 20
[[fault]]
endpoint = "vault:demo"
path = "/secrets/hang"
action = "hang"
[[fault]]
endpoint = "vault:demo"
path = "/secrets/moved"
action = "redirect"
status = 302
location = "https://elsewhere.example/secrets/moved"
[[fault]]
endpoint = "vault:demo"
path = "/secrets/evil"
action = "challenge-resource"
resource = "https://evil.example"
"#,
    );
    let c = client(&emu);
    assert!(
        c.get(secret_url(&emu, "/secrets/reset"))
            .send()
            .await
            .is_err()
    );
    let mid = c.get(secret_url(&emu, "/secrets/midbody")).send().await;
    assert!(match mid {
        Ok(r) => r.text().await.is_err(),
        Err(_) => true,
    });
    let r = get(&c, &secret_url(&emu, "/secrets/malformed"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.text).is_err());
    let r = imds(&c, &emu, "api-version=2018-02-01&resource=r").await;
    assert_eq!(r.status, 200);
    assert!(r.text.starts_with("{\"access_token\""));
    assert!(serde_json::from_str::<Value>(&r.text).is_err());
    let r = get(&c, &secret_url(&emu, "/secrets/big"), &[]).await;
    assert_eq!(r.text.len(), 300_000);
    assert!(r.json()["value"].is_string());
    let started = Instant::now();
    let r = get(&c, &secret_url(&emu, "/secrets/slow"), &[]).await;
    assert_eq!(r.status, 401);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(r.json()["error"]["code"] == "Unauthorized");
    let hang = c
        .get(secret_url(&emu, "/secrets/hang"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("hangs");
    assert!(hang.is_timeout());
    let r = get(&c, &secret_url(&emu, "/secrets/moved"), &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        "https://elsewhere.example/secrets/moved"
    );
    let r = get(&c, &secret_url(&emu, "/secrets/evil"), &[]).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .ends_with("resource=\"https://evil.example\"")
    );
    // The emulator keeps serving after all that.
    assert_eq!(
        get(&c, &secret_url(&emu, "/secrets/db-password"), &[])
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn faults_can_match_on_authorization_and_hide_the_length() {
    let emu = start(
        r#"
[[fault]]
endpoint = "vault:demo"
path = "/secrets/db-password"
authorized = true
first = 1
status = 503
[[fault]]
endpoint = "vault:demo"
path = "/secrets/rotated"
authorized = false
status = 500
[[fault]]
endpoint = "vault:demo"
path = "/secrets/big"
action = "oversized-body"
size_bytes = 300000
content_length = false
"#,
    );
    let c = client(&emu);
    let auth = bearer(&vault_token(&c, &emu).await);
    let url = secret_url(&emu, "/secrets/db-password");
    // Without a token the `authorized = true` fault does not apply, nor count.
    assert_eq!(get(&c, &url, &[]).await.status, 401);
    assert_eq!(get(&c, &url, &[("authorization", &auth)]).await.status, 503);
    assert_eq!(get(&c, &url, &[("authorization", &auth)]).await.status, 200);
    let url = secret_url(&emu, "/secrets/rotated");
    assert_eq!(get(&c, &url, &[]).await.status, 500);
    assert_eq!(get(&c, &url, &[("authorization", &auth)]).await.status, 200);
    let r = get(&c, &secret_url(&emu, "/secrets/big"), &[]).await;
    assert!(r.headers.get("content-length").is_none(), "{:?}", r.headers);
    assert_eq!(r.text.len(), 300_000);
    assert!(r.json()["value"].is_string());
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let emu = start(
        r#"
[imds]
throttle = { requests = 2, per_seconds = 60 }
"#,
    );
    let c = client(&emu);
    for _ in 0..2 {
        assert_eq!(
            imds(&c, &emu, "api-version=2018-02-01&resource=r")
                .await
                .status,
            200
        );
    }
    let r = imds(&c, &emu, "api-version=2018-02-01&resource=r").await;
    assert_eq!(r.status, 429);
    let secs: u64 = r.header("retry-after").parse().expect("seconds");
    assert!((1..=30).contains(&secs), "{secs}");
}

#[tokio::test]
async fn latency_delays_answers() {
    let emu = start("[entra]\nlatency_ms = 150\n");
    let c = client(&emu);
    let started = Instant::now();
    let r = get(
        &c,
        &format!("{}/common/discovery/instance", emu.authority_host()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

// --- Request log, env, lifecycle --------------------------------------------

#[tokio::test]
async fn request_log_reduces_tokens_to_fingerprints() {
    let dir = std::env::temp_dir().join(format!("kvrun-emulator-test-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("requests.jsonl");
    let _ = std::fs::remove_file(&log);
    let emu = Emulator::start(config("").with_request_log(&log)).expect("start");
    let c = client(&emu);
    let token = vault_token(&c, &emu).await;
    let r = get(
        &c,
        &secret_url(&emu, "/secrets/db-password"),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_token(
        &c,
        &emu,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SP),
            ("scope", "s/.default"),
            ("client_secret", "right"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    // A credential in a query string must not be logged either.
    let _ = get(
        &c,
        &format!(
            "{}/x?client_secret=hunter2&access_token={token}",
            emu.authority_host()
        ),
        &[],
    )
    .await;

    let records = emu.requests();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].endpoint, "imds");
    assert_eq!(records[0].auth, None);
    let vault = &records[1];
    assert_eq!(vault.endpoint, "vault:demo");
    assert_eq!(vault.method, "GET");
    assert_eq!(vault.path, "/secrets/db-password");
    assert_eq!(vault.status, 200);
    assert_eq!(
        vault.host,
        emu.vault_url("demo")
            .expect("demo")
            .trim_start_matches("https://")
    );
    let auth = vault.auth.as_ref().expect("auth");
    assert_eq!(auth.scheme, "Bearer");
    assert_eq!(auth.fingerprint, fingerprint(&token));
    assert_eq!(auth.audience.as_deref(), emu.vault_url("demo").as_deref());
    assert_eq!(auth.identity.as_deref(), Some("system"));
    assert_eq!(records[2].endpoint, "entra");
    assert_eq!(
        records[3].query,
        "client_secret=REDACTED&access_token=REDACTED"
    );

    drop(emu);
    let text = std::fs::read_to_string(&log).expect("log file");
    assert_eq!(text.lines().count(), 4);
    assert!(!text.contains(&token) && !text.contains("hunter2") && !text.contains("right"));
    let line: Value = serde_json::from_str(text.lines().nth(1).expect("line")).expect("json line");
    for k in [
        "ts", "endpoint", "method", "host", "path", "query", "status", "auth",
    ] {
        assert!(line.get(k).is_some(), "{k} in {line}");
    }
    assert_eq!(line["auth"]["fingerprint"], fingerprint(&token));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn env_exports_what_clients_need_and_nothing_that_changes_their_choice() {
    let emu = start("");
    let env = emu.env();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("AZURE_POD_IDENTITY_AUTHORITY_HOST"),
        Some(emu.imds_host())
    );
    assert_eq!(get("IDENTITY_ENDPOINT"), Some(emu.identity_endpoint()));
    assert_eq!(get("IDENTITY_HEADER"), Some(emu.identity_header()));
    assert_eq!(get("AZURE_AUTHORITY_HOST"), Some(emu.authority_host()));
    assert_eq!(get("AZURE_TENANT_ID").as_deref(), Some(TENANT));
    let ca = emu.ca_pem_path().display().to_string();
    assert_eq!(get("SSL_CERT_FILE"), Some(ca.clone()));
    assert_eq!(get("REQUESTS_CA_BUNDLE"), Some(ca));
    assert_eq!(get("KVRUN_VAULT"), emu.vault_url("demo"));
    assert_eq!(
        get("KVRUN_EMULATOR_PID"),
        Some(std::process::id().to_string())
    );
    assert_eq!(get("KVRUN_EMULATOR_VAULT_DEMO"), emu.vault_url("demo"));
    assert_eq!(
        get("KVRUN_EMULATOR_VAULT_POLICY_VAULT"),
        emu.vault_url("policy-vault")
    );
    for absent in [
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IMDS_ENDPOINT",
    ] {
        assert_eq!(get(absent), None, "{absent}");
    }
    assert!(emu.imds_host().starts_with("http://127.0.0.1:"));
    assert!(emu.authority_host().starts_with("https://127.0.0.1:"));
    assert!(
        emu.vault_url("demo")
            .is_some_and(|u| u.starts_with("https://127.0.0.1:"))
    );
    assert_eq!(emu.vault_url("DEMO"), emu.vault_url("demo"));
    assert_eq!(emu.vault_url("nope"), None);
}

#[test]
fn state_dir_is_private_and_removed_on_shutdown() {
    use std::os::unix::fs::PermissionsExt as _;
    let emu = start("");
    let dir = emu.state_dir();
    let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(emu.ca_pem_path().starts_with(&dir));
    let token = emu.federated_token_file("wl").expect("token file");
    assert!(token.exists());
    emu.shutdown();
    assert!(!dir.exists());
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cfg = Config::from_toml(
        &format!("[[vault]]\nname = \"demo\"\nport = {port}\n"),
        "t.toml",
    )
    .expect("config");
    let e = Emulator::start(cfg).expect_err("port in use");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot listen on 127.0.0.1:{port} for vault:demo: "
        )),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1);
}

#[test]
fn default_config_serves_a_newcomer() {
    let emu = Emulator::start(Config::default()).expect("start");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let c = client(&emu);
        let auth = bearer(&vault_token(&c, &emu).await);
        let h = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let body = Some(json!({"value": "hello"}).to_string());
        assert_eq!(
            send(
                &c,
                Method::PUT,
                &secret_url(&emu, "/secrets/greeting"),
                &h,
                body
            )
            .await
            .status,
            200
        );
        assert_eq!(
            get(&c, &secret_url(&emu, "/secrets/greeting"), &h)
                .await
                .json()["value"],
            "hello"
        );
        assert_eq!(get(&c, &secret_url(&emu, "/secrets"), &h).await.status, 200);
    });
}

// --- Other managed-identity sources -----------------------------------------

#[tokio::test]
async fn arc_challenge_then_basic_auth() {
    let emu = start("");
    let c = client(&emu);
    let env = emu.arc_env();
    let endpoint = &env
        .iter()
        .find(|(k, _)| k == "IDENTITY_ENDPOINT")
        .expect("endpoint")
        .1;
    assert!(env.iter().any(|(k, _)| k == "IMDS_ENDPOINT"));
    let url = format!("{endpoint}?api-version=2020-06-01&resource=https://vault.azure.net");
    let r = get(&c, &url, &[("Metadata", "true")]).await;
    assert_eq!(r.status, 401);
    let realm = r
        .header("www-authenticate")
        .strip_prefix("Basic realm=")
        .expect("basic realm")
        .to_owned();
    assert!(realm.ends_with(".key") && !realm.contains('='));
    let key = std::fs::read_to_string(&realm).expect("key file");
    let r = get(
        &c,
        &url,
        &[
            ("Metadata", "true"),
            ("Authorization", &format!("Basic {key}")),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert!(
        v["expires_on"].is_string() && v["expires_in"].is_string() && v["ext_expires_in"].is_i64()
    );
}

#[tokio::test]
async fn cloud_shell_service_fabric_and_azure_ml() {
    let emu = start("");
    let c = client(&emu);
    let find = |env: &[(String, String)], k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .expect(k)
    };

    let cs = find(&emu.cloud_shell_env(), "MSI_ENDPOINT");
    let r = send(
        &c,
        Method::POST,
        &cs,
        &[
            ("Metadata", "true"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some("resource=https%3A%2F%2Fvault.azure.net".to_owned()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["resource"], "https://vault.azure.net");

    let sf = emu.service_fabric_env();
    let thumb = find(&sf, "IDENTITY_SERVER_THUMBPRINT");
    assert_eq!(thumb.len(), 40);
    assert_eq!(find(&sf, "IDENTITY_API_VERSION"), "2019-07-01-preview");
    // Clients pin the thumbprint instead of validating a chain.
    let insecure = Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .expect("client");
    let url = format!(
        "{}?api-version=2019-07-01-preview&resource=https://vault.azure.net",
        find(&sf, "IDENTITY_ENDPOINT")
    );
    let r = get(
        &insecure,
        &url,
        &[("secret", &find(&sf, "IDENTITY_HEADER"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["expires_on"].is_i64());
    assert_eq!(
        get(&insecure, &url, &[]).await.json()["error"]["code"],
        "SecretHeaderNotFound"
    );

    let ml = emu.azure_ml_env();
    let url = format!(
        "{}?api-version=2017-09-01&resource=https://vault.azure.net&clientid={}",
        find(&ml, "MSI_ENDPOINT"),
        find(&ml, "DEFAULT_IDENTITY_CLIENT_ID")
    );
    let r = get(&c, &url, &[("secret", &find(&ml, "MSI_SECRET"))]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert!(v["expires_on"].is_i64() && v["expires_in"].is_i64());
}

#[test]
fn debug_output_never_shows_credentials_or_values() {
    let emu = start("");
    let text = format!("{emu:?} {:?}", config(""));
    assert!(
        !text.contains(&emu.identity_header()),
        "identity header in Debug"
    );
    assert!(!text.contains("s3cret"), "secret value in Debug");
    assert!(!text.contains("\"right\""), "client secret in Debug");
}

#[test]
fn env_for_source_swaps_the_app_service_variables() {
    let emu = start("");
    let names = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let imds = names(&emu.env_for_source("imds").expect("imds"));
    assert!(imds.contains(&"AZURE_POD_IDENTITY_AUTHORITY_HOST".to_owned()));
    assert!(!imds.iter().any(|k| k.starts_with("IDENTITY_")));
    let arc = names(&emu.env_for_source("arc").expect("arc"));
    assert!(
        arc.contains(&"IMDS_ENDPOINT".to_owned()) && arc.contains(&"IDENTITY_ENDPOINT".to_owned())
    );
    assert!(!arc.contains(&"IDENTITY_HEADER".to_owned()));
    let sf = names(&emu.env_for_source("service-fabric").expect("sf"));
    assert!(sf.contains(&"IDENTITY_SERVER_THUMBPRINT".to_owned()));
    let ml = names(&emu.env_for_source("azure-ml").expect("ml"));
    assert!(ml.contains(&"MSI_SECRET".to_owned()) && !ml.contains(&"IDENTITY_ENDPOINT".to_owned()));
    assert_eq!(emu.env_for_source("moon"), None);
    for source in kvrun_emulator::SOURCES {
        assert!(emu.env_for_source(source).is_some(), "{source}");
    }
}
