//! Key Vault, secrets only: the per-vault store and its REST API (get, set,
//! update, delete, list with paging, deleted secrets), bearer-token checks with
//! the 401 challenge, and RBAC / access-policy authorization.
//!
//! Bodies, status codes and headers follow the recordings in
//! `shared/fixtures/azure-recordings` (kv-*): SecretBundle fields and types,
//! the `{"error":{"code","message","innererror":{"code"}}}` envelope with
//! lowercase `innererror`, absolute `nextLink`s with an explicit port, a
//! `$skiptoken` and the request's `maxresults`, and `"nextLink": null` on the
//! last page.

use std::collections::BTreeMap;
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::{Method, Response};
use serde_json::{Map, Value, json};

use crate::clock::now_secs;
use crate::config::{Authorization, Permission, Redacted, VaultConfig, valid_secret_name};
use crate::http::{self, Body, Req};
use crate::ids::{new_guid, new_version_id};
use crate::server::Shared;
use crate::token::TokenError;

/// Largest secret value Key Vault accepts (25 KB).
pub(crate) const MAX_VALUE_BYTES: usize = 25 * 1024;
/// A server build as recent recordings show it (kv-401-challenge-put-api2025-07-01).
const SERVICE_VERSION: &str = "1.9.3449.1";
const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const RECOVERABLE_DAYS: i64 = 90;
const MAX_PAGE: usize = 25;
/// Made-up subscription used in resource ids of RBAC messages.
const SUBSCRIPTION: &str = "00000000-0000-4000-8000-000000000000";

#[derive(Debug, Clone)]
struct Version {
    id: String,
    value: Redacted,
    enabled: bool,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
}

#[derive(Debug, Clone)]
struct Secret {
    /// Name as first created; lookups are case-insensitive.
    name: String,
    /// Oldest first; the last one is the current version.
    versions: Vec<Version>,
}

impl Secret {
    fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    fn version(&self, id: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.id.eq_ignore_ascii_case(id))
    }
}

#[derive(Debug, Clone)]
struct Deleted {
    secret: Secret,
    deleted_date: i64,
    scheduled_purge: i64,
}

#[derive(Debug, Default)]
struct Store {
    /// By lower-cased name, so listing is in name order.
    secrets: BTreeMap<String, Secret>,
    deleted: BTreeMap<String, Deleted>,
}

/// One emulated vault.
#[derive(Debug)]
pub(crate) struct Vault {
    pub name: String,
    /// `https://127.0.0.1:PORT` (or `https://HOST:PORT` for a vault with a
    /// `host`): the vault URL, and the base of every id it returns.
    pub origin: String,
    /// The audience its tokens must carry, and the challenge's `resource`: the
    /// cloud's Key Vault audience for a host under a cloud's vault suffix (as Key
    /// Vault itself says), else the origin.
    pub audience: String,
    /// The vault's own DNS name, when it has one (`host =` in the config).
    pub host: Option<String>,
    pub authorization: Authorization,
    store: RwLock<Store>,
}

impl Vault {
    pub(crate) fn new(cfg: &VaultConfig, origin: String, now: i64) -> Vault {
        let mut store = Store::default();
        for seed in &cfg.secrets {
            let versions = seed
                .versions
                .iter()
                .map(|v| Version {
                    id: v.id.clone().unwrap_or_else(new_version_id),
                    value: v.value.clone(),
                    enabled: v.enabled,
                    content_type: v.content_type.clone(),
                    tags: v.tags.clone(),
                    nbf: v.nbf,
                    exp: v.exp,
                    created: now,
                    updated: now,
                })
                .collect();
            store.secrets.insert(
                seed.name.to_ascii_lowercase(),
                Secret {
                    name: seed.name.clone(),
                    versions,
                },
            );
        }
        let audience = audience_of(cfg.host.as_deref())
            .unwrap_or(&origin)
            .to_owned();
        Vault {
            name: cfg.name.clone(),
            audience,
            host: cfg.host.clone(),
            origin,
            authorization: cfg.authorization,
            store: RwLock::new(store),
        }
    }
}

/// Vault DNS suffixes of the Azure clouds and the audience of each.
const CLOUD_VAULT_SUFFIXES: &[(&str, &str)] = &[
    (".vault.azure.net", "https://vault.azure.net"),
    (".vault.azure.cn", "https://vault.azure.cn"),
    (
        ".vault.usgovcloudapi.net",
        "https://vault.usgovcloudapi.net",
    ),
    (
        ".vault.microsoftazure.de",
        "https://vault.microsoftazure.de",
    ),
];

fn audience_of(host: Option<&str>) -> Option<&'static str> {
    let host = host?;
    CLOUD_VAULT_SUFFIXES
        .iter()
        .find(|(suffix, _)| host.ends_with(suffix))
        .map(|(_, audience)| *audience)
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

fn kv_error(status: u16, code: &str, message: &str) -> Response<Body> {
    http::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn kv_inner_error(status: u16, code: &str, inner: &str, message: &str) -> Response<Body> {
    http::json(
        status,
        &json!({"error": {"code": code, "message": message, "innererror": {"code": inner}}}),
    )
}

/// The 401 with the Bearer challenge (kv-401-challenge-*): `authorization`
/// names the authority and tenant, `resource` the audience to ask for.
pub(crate) fn challenge(s: &Shared, resource: &str, status: u16, message: &str) -> Response<Body> {
    let mut r = kv_error(status, "Unauthorized", message);
    http::set_header(
        &mut r,
        "www-authenticate",
        &format!(
            "Bearer authorization=\"{}/{}\", resource=\"{resource}\"",
            s.urls.authority, s.tenant_id
        ),
    );
    r
}

fn not_found(name: &str) -> Response<Body> {
    // The 2023+ wording (kv-404-secret-not-found-get-api7.4/7.6).
    kv_error(
        404,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn deleted_not_found(name: &str) -> Response<Body> {
    kv_error(
        404,
        "SecretNotFound",
        &format!("Deleted Secret not found: {name}"),
    )
}

fn bad_parameter(message: &str) -> Response<Body> {
    kv_error(400, "BadParameter", message)
}

/// Headers every Key Vault response carries (as recorded), whatever produced it.
pub(crate) fn service_headers(s: &Shared, req: &Req, r: &mut Response<Body>) {
    http::set_header(r, "x-ms-request-id", &new_guid());
    http::set_header(r, "x-ms-keyvault-service-version", SERVICE_VERSION);
    http::set_header(r, "x-ms-keyvault-region", &s.region);
    http::set_header(
        r,
        "x-ms-keyvault-network-info",
        "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
    );
    http::set_header(r, "cache-control", "no-cache");
    http::set_header(r, "pragma", "no-cache");
    http::set_header(r, "expires", "-1");
    http::set_header(
        r,
        "strict-transport-security",
        "max-age=31536000;includeSubDomains",
    );
    http::set_header(r, "x-content-type-options", "nosniff");
    if let Some(id) = req.header("x-ms-client-request-id") {
        http::set_header(r, "x-ms-client-request-id", id);
    }
}

fn attributes(v: &Version) -> Value {
    let mut a = Map::new();
    a.insert("enabled".into(), v.enabled.into());
    if let Some(nbf) = v.nbf {
        a.insert("nbf".into(), nbf.into());
    }
    if let Some(exp) = v.exp {
        a.insert("exp".into(), exp.into());
    }
    a.insert("created".into(), v.created.into());
    a.insert("updated".into(), v.updated.into());
    a.insert("recoveryLevel".into(), RECOVERY_LEVEL.into());
    a.insert("recoverableDays".into(), RECOVERABLE_DAYS.into());
    Value::Object(a)
}

/// SecretBundle (kv-get-secret-200-api2025-07-01-python.json), or a SecretItem
/// when `value` is false and `versioned` says whether `id` names the version.
fn bundle(
    origin: &str,
    name: &str,
    v: &Version,
    value: bool,
    versioned: bool,
) -> Map<String, Value> {
    let mut b = Map::new();
    if value {
        b.insert("value".into(), v.value.0.clone().into());
    }
    let id = if versioned {
        format!("{origin}/secrets/{name}/{}", v.id)
    } else {
        format!("{origin}/secrets/{name}")
    };
    b.insert("id".into(), id.into());
    if let Some(ct) = &v.content_type {
        b.insert("contentType".into(), ct.clone().into());
    }
    b.insert("attributes".into(), attributes(v));
    if !v.tags.is_empty() {
        b.insert("tags".into(), json!(v.tags));
    }
    b
}

fn deleted_bundle(origin: &str, d: &Deleted, item: bool) -> Option<Value> {
    let v = d.secret.latest()?;
    let mut b = bundle(origin, &d.secret.name, v, false, !item);
    b.insert(
        "recoveryId".into(),
        format!("{origin}/deletedsecrets/{}", d.secret.name).into(),
    );
    b.insert("deletedDate".into(), d.deleted_date.into());
    b.insert("scheduledPurgeDate".into(), d.scheduled_purge.into());
    Some(Value::Object(b))
}

// ---------------------------------------------------------------------------
// Routing and authorization
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Get(&'a str, Option<&'a str>),
    Set(&'a str),
    Update(&'a str, Option<&'a str>),
    Delete(&'a str),
    List,
    ListVersions(&'a str),
    ListDeleted,
    GetDeleted(&'a str),
    Purge(&'a str),
    Recover(&'a str),
}

impl Route<'_> {
    fn permission(self) -> Permission {
        match self {
            Route::Get(..) | Route::GetDeleted(_) => Permission::Get,
            Route::Set(_) | Route::Update(..) => Permission::Set,
            Route::Delete(_) => Permission::Delete,
            Route::List | Route::ListVersions(_) | Route::ListDeleted => Permission::List,
            Route::Purge(_) => Permission::Purge,
            Route::Recover(_) => Permission::Recover,
        }
    }

    /// The RBAC data action Key Vault names in ForbiddenByRbac messages.
    fn action(self) -> &'static str {
        match self {
            Route::Get(..) => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            Route::Set(_) | Route::Update(..) => {
                "Microsoft.KeyVault/vaults/secrets/setSecret/action"
            }
            Route::Delete(_) => "Microsoft.KeyVault/vaults/secrets/delete",
            Route::List | Route::ListVersions(_) => {
                "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
            }
            Route::ListDeleted | Route::GetDeleted(_) => {
                "Microsoft.KeyVault/vaults/deletedSecrets/read"
            }
            Route::Purge(_) => "Microsoft.KeyVault/vaults/deletedSecrets/delete",
            Route::Recover(_) => "Microsoft.KeyVault/vaults/deletedSecrets/recover/action",
        }
    }
}

/// Maps method and path to an operation. `Err` carries the status for
/// unknown paths (404) and unsupported methods (405).
fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, u16> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // A trailing slash adds an empty last segment; the SDKs send
    // `/secrets/{name}/` for "latest", so it is ignored everywhere.
    let segs = match segs.split_last() {
        Some((&"", rest)) if !rest.is_empty() => rest,
        _ => segs.as_slice(),
    };
    let named = |n: &&str| !n.is_empty();
    let r = match (method, segs) {
        (&Method::GET, ["secrets"]) => Route::List,
        (m, ["secrets", n]) if named(n) => match *m {
            Method::GET => Route::Get(n, None),
            Method::PUT => Route::Set(n),
            Method::PATCH => Route::Update(n, None),
            Method::DELETE => Route::Delete(n),
            _ => return Err(405),
        },
        (&Method::GET, ["secrets", n, "versions"]) if named(n) => Route::ListVersions(n),
        (m, ["secrets", n, v]) if named(n) => match *m {
            Method::GET => Route::Get(n, Some(v)),
            Method::PATCH => Route::Update(n, Some(v)),
            _ => return Err(405),
        },
        (&Method::GET, ["deletedsecrets"]) => Route::ListDeleted,
        (m, ["deletedsecrets", n]) if named(n) => match *m {
            Method::GET => Route::GetDeleted(n),
            Method::DELETE => Route::Purge(n),
            _ => return Err(405),
        },
        (&Method::POST, ["deletedsecrets", n, "recover"]) if named(n) => Route::Recover(n),
        _ => return Err(404),
    };
    Ok(r)
}

/// Who called: the identity index and the claims the messages quote.
struct Caller {
    identity: Option<usize>,
    appid: String,
    oid: String,
    iss: String,
}

fn authenticate(s: &Shared, v: &Vault, req: &Req) -> Result<Caller, Response<Body>> {
    let token = req
        .header("authorization")
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let deny = |message: &str| challenge(s, &v.audience, 401, message);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        // kv-401-challenge-put-api2025-07-01-net-2026.json
        return Err(deny(
            "AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token.",
        ));
    };
    // AKV10000 and AKV10022 are recorded or documented; the other AKV100xx
    // codes and texts here are plausible stand-ins. [UNCONFIRMED]
    let verified = match s.signer.verify(token, now_secs()) {
        Ok(v) => v,
        Err(TokenError::Malformed) => return Err(deny("AKV10001: Bearer token is malformed.")),
        Err(TokenError::BadSignature) => {
            return Err(deny(
                "AKV10046: Unable to resolve the key used for signature validation.",
            ));
        }
        Err(TokenError::Expired) => return Err(deny("AKV10005: Token has expired.")),
        Err(TokenError::NotYetValid) => return Err(deny("AKV10006: Token is not yet valid.")),
    };
    let iss = verified.claim("iss").unwrap_or("").to_owned();
    let want_iss = crate::token::issuer(&s.tenant_id);
    if iss != want_iss {
        return Err(deny(&format!(
            "AKV10032: Invalid issuer. Expected one of {want_iss}, found {iss}."
        )));
    }
    let aud = verified.claim("aud").unwrap_or("");
    if !aud.trim_end_matches('/').eq_ignore_ascii_case(&v.audience) {
        return Err(deny(&format!(
            "AKV10022: Invalid audience. Expected {}, found: {aud}.",
            v.audience
        )));
    }
    let oid = verified.claim("oid").unwrap_or("").to_owned();
    Ok(Caller {
        identity: s.identity_by_oid(&oid).map(|(i, _)| i),
        appid: verified.claim("appid").unwrap_or("").to_owned(),
        oid,
        iss,
    })
}

fn forbidden(s: &Shared, v: &Vault, caller: &Caller, route: Route<'_>) -> Response<Body> {
    let who = format!(
        "appid={};oid={};iss={}",
        caller.appid, caller.oid, caller.iss
    );
    let vault = format!("{};location={}", v.name, s.region);
    match v.authorization {
        Authorization::AccessPolicy => kv_inner_error(
            403,
            "Forbidden",
            "AccessDenied",
            &format!(
                "The user, group or application '{who}' does not have secrets {} permission on key vault '{vault}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                route.permission().name()
            ),
        ),
        Authorization::Rbac => {
            let resource = match route {
                Route::Get(n, _)
                | Route::Set(n)
                | Route::Update(n, _)
                | Route::Delete(n)
                | Route::ListVersions(n) => {
                    format!("/secrets/{n}")
                }
                Route::GetDeleted(n) | Route::Purge(n) | Route::Recover(n) => {
                    format!("/deletedsecrets/{n}")
                }
                Route::List | Route::ListDeleted => String::new(),
            };
            kv_inner_error(
                403,
                "Forbidden",
                "ForbiddenByRbac",
                &format!(
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: {who}\r\nAction: '{}'\r\nResource: '/subscriptions/{SUBSCRIPTION}/resourcegroups/kvrun-emulator/providers/microsoft.keyvault/vaults/{}{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {vault}\r\n",
                    route.action(),
                    v.name.to_ascii_lowercase(),
                    resource.to_ascii_lowercase()
                ),
            )
        }
    }
}

/// Serves one request to vault `vi`.
pub(crate) fn handle(s: &Shared, vi: usize, req: &Req) -> Response<Body> {
    let v = &s.vaults[vi];
    if req.path == "/healthstatus" {
        // Unauthenticated diagnostics endpoint, as on the real service.
        return http::json(200, &json!({}));
    }
    // Key Vault has no default api-version (DOC-KV-AUTH); the exact body of
    // this error is [UNCONFIRMED].
    let Some(api_version) = req.q("api-version").filter(|a| !a.is_empty()) else {
        return bad_parameter(
            "The request URI contains an invalid or missing api-version query parameter.",
        );
    };
    let caller = match authenticate(s, v, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let route = match route(&req.method, &req.path) {
        Ok(r) => r,
        Err(405) => {
            return kv_error(
                405,
                "MethodNotAllowed",
                "The requested method is not supported for this resource.",
            );
        }
        Err(_) => return kv_error(404, "NotFound", "The requested resource was not found."),
    };
    let allowed = caller
        .identity
        .is_some_and(|i| s.permissions(i, vi).contains(&route.permission()));
    if !allowed {
        return forbidden(s, v, &caller, route);
    }
    match route {
        Route::Get(n, ver) => get(v, n, ver),
        Route::Set(n) => set(v, n, req),
        Route::Update(n, ver) => update(v, n, ver, req),
        Route::Delete(n) => delete(v, n),
        Route::List => list(v, req, api_version, None),
        Route::ListVersions(n) => list(v, req, api_version, Some(n)),
        Route::ListDeleted => list_deleted(v, req, api_version),
        Route::GetDeleted(n) => get_deleted(v, n),
        Route::Purge(n) => purge(v, n),
        Route::Recover(n) => recover(v, n),
    }
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

fn read(v: &Vault) -> std::sync::RwLockReadGuard<'_, Store> {
    // A panic while holding the lock leaves consistent data behind (every
    // write is a single insert or field update), so poisoning is ignored.
    v.store
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(v: &Vault) -> std::sync::RwLockWriteGuard<'_, Store> {
    v.store
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn get(v: &Vault, name: &str, version: Option<&str>) -> Response<Body> {
    let store = read(v);
    let Some(secret) = store.secrets.get(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let found = match version {
        Some(id) => secret.version(id),
        None => secret.latest(),
    };
    let Some(ver) = found else {
        return not_found(&format!("{name}/{}", version.unwrap_or("")));
    };
    if !ver.enabled {
        // kv-403-secret-disabled-get-api7.6-preview.1-net-2024.json
        return kv_inner_error(
            403,
            "Forbidden",
            "SecretDisabled",
            "Operation get is not allowed on a disabled secret.",
        );
    }
    http::json(
        200,
        &Value::Object(bundle(&v.origin, &secret.name, ver, true, true)),
    )
}

/// `attributes` of a PUT or PATCH body. `None` leaves a field as it is; a
/// JSON `null` clears `nbf`/`exp`.
#[derive(Debug, Default, PartialEq, Eq)]
struct AttributePatch {
    enabled: Option<bool>,
    nbf: Option<Option<i64>>,
    exp: Option<Option<i64>>,
}

fn optional_int(a: &Map<String, Value>, key: &str) -> Result<Option<Option<i64>>, String> {
    match a.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_i64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| format!("attributes.{key} must be an integer (Unix seconds)")),
    }
}

fn parse_attributes(body: &Map<String, Value>) -> Result<AttributePatch, String> {
    let Some(a) = body.get("attributes") else {
        return Ok(AttributePatch::default());
    };
    let Some(a) = a.as_object() else {
        return Err("attributes must be an object".to_owned());
    };
    let enabled = match a.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("attributes.enabled must be a boolean".to_owned()),
    };
    Ok(AttributePatch {
        enabled,
        nbf: optional_int(a, "nbf")?,
        exp: optional_int(a, "exp")?,
    })
}

fn parse_tags(body: &Map<String, Value>) -> Result<Option<BTreeMap<String, String>>, String> {
    match body.get("tags") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(BTreeMap::new())),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(format!("tag `{k}` must be a string"));
                };
                out.insert(k.clone(), v.to_owned());
            }
            if out.len() > 15 {
                return Err("at most 15 tags are allowed".to_owned());
            }
            Ok(Some(out))
        }
        Some(_) => Err("tags must be an object".to_owned()),
    }
}

fn parse_content_type(body: &Map<String, Value>) -> Result<Option<Option<String>>, String> {
    match body.get("contentType") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.len() <= 255 => Ok(Some(Some(s.clone()))),
        Some(_) => Err("contentType must be a string of at most 255 characters".to_owned()),
    }
}

fn json_body(req: &Req) -> Result<Map<String, Value>, Response<Body>> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad_parameter(
            "The request body is not a valid JSON object.",
        )),
    }
}

fn set(v: &Vault, name: &str, req: &Req) -> Response<Body> {
    if !valid_secret_name(name) {
        return bad_parameter(&format!(
            "The request URI contains an invalid name: {name}. Secret names are 1-127 characters of 0-9, a-z, A-Z and -."
        ));
    }
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(value) = body.get("value").and_then(Value::as_str) else {
        return bad_parameter("Property 'value' is required and must be a string.");
    };
    if value.len() > MAX_VALUE_BYTES {
        return bad_parameter(&format!(
            "The secret value exceeds the maximum size of {MAX_VALUE_BYTES} bytes."
        ));
    }
    let parsed = parse_attributes(&body)
        .and_then(|a| Ok((a, parse_tags(&body)?, parse_content_type(&body)?)));
    let (attrs, tags, content_type) = match parsed {
        Ok(p) => p,
        Err(m) => return bad_parameter(&m),
    };
    let key = name.to_ascii_lowercase();
    let mut store = write(v);
    if store.deleted.contains_key(&key) {
        return kv_error(
            409,
            "Conflict",
            &format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
        );
    }
    let now = now_secs();
    let version = Version {
        id: new_version_id(),
        value: Redacted(value.to_owned()),
        enabled: attrs.enabled.unwrap_or(true),
        content_type: content_type.flatten(),
        tags: tags.unwrap_or_default(),
        nbf: attrs.nbf.flatten(),
        exp: attrs.exp.flatten(),
        created: now,
        updated: now,
    };
    let secret = store.secrets.entry(key).or_insert_with(|| Secret {
        name: name.to_owned(),
        versions: Vec::new(),
    });
    secret.versions.push(version);
    let stored_name = secret.name.clone();
    let Some(ver) = secret.latest() else {
        return kv_error(
            500,
            "InternalServerError",
            "The secret could not be stored.",
        );
    };
    http::json(
        200,
        &Value::Object(bundle(&v.origin, &stored_name, ver, true, true)),
    )
}

fn update(v: &Vault, name: &str, version: Option<&str>, req: &Req) -> Response<Body> {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = parse_attributes(&body)
        .and_then(|a| Ok((a, parse_tags(&body)?, parse_content_type(&body)?)));
    let (attrs, tags, content_type) = match parsed {
        Ok(p) => p,
        Err(m) => return bad_parameter(&m),
    };
    let mut store = write(v);
    let Some(secret) = store.secrets.get_mut(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let stored_name = secret.name.clone();
    let ver = match version {
        Some(id) => secret
            .versions
            .iter_mut()
            .find(|x| x.id.eq_ignore_ascii_case(id)),
        None => secret.versions.last_mut(),
    };
    let Some(ver) = ver else {
        return not_found(&format!("{name}/{}", version.unwrap_or("")));
    };
    if let Some(e) = attrs.enabled {
        ver.enabled = e;
    }
    if let Some(n) = attrs.nbf {
        ver.nbf = n;
    }
    if let Some(x) = attrs.exp {
        ver.exp = x;
    }
    if let Some(t) = tags {
        ver.tags = t;
    }
    if let Some(c) = content_type {
        ver.content_type = c;
    }
    ver.updated = now_secs();
    // The update answer is the bundle without the value.
    http::json(
        200,
        &Value::Object(bundle(&v.origin, &stored_name, ver, false, true)),
    )
}

fn delete(v: &Vault, name: &str) -> Response<Body> {
    let key = name.to_ascii_lowercase();
    let mut store = write(v);
    let Some(secret) = store.secrets.remove(&key) else {
        return not_found(name);
    };
    let now = now_secs();
    let d = Deleted {
        secret,
        deleted_date: now,
        scheduled_purge: now + RECOVERABLE_DAYS * 86_400,
    };
    let body = deleted_bundle(&v.origin, &d, false).unwrap_or_else(|| json!({}));
    store.deleted.insert(key, d);
    http::json(200, &body)
}

fn get_deleted(v: &Vault, name: &str) -> Response<Body> {
    let store = read(v);
    match store
        .deleted
        .get(&name.to_ascii_lowercase())
        .and_then(|d| deleted_bundle(&v.origin, d, false))
    {
        Some(b) => http::json(200, &b),
        None => deleted_not_found(name),
    }
}

fn purge(v: &Vault, name: &str) -> Response<Body> {
    let mut store = write(v);
    match store.deleted.remove(&name.to_ascii_lowercase()) {
        Some(_) => http::bytes_response(204, http::JSON_UTF8, ""),
        None => deleted_not_found(name),
    }
}

fn recover(v: &Vault, name: &str) -> Response<Body> {
    let key = name.to_ascii_lowercase();
    let mut store = write(v);
    if store.secrets.contains_key(&key) {
        return kv_error(409, "Conflict", &format!("Secret {name} already exists."));
    }
    let Some(d) = store.deleted.remove(&key) else {
        return deleted_not_found(name);
    };
    let body = d
        .secret
        .latest()
        .map(|ver| Value::Object(bundle(&v.origin, &d.secret.name, ver, false, true)))
        .unwrap_or_else(|| json!({}));
    store.secrets.insert(key, d.secret);
    http::json(200, &body)
}

/// Decodes a `$skiptoken`: base64url of `{"NextMarker":"<offset>","TargetLocation":0}`
/// (the real tokens are base64 JSON with a `NextMarker` too). URL-safe so that
/// clients that re-encode the query (Python's pager does) cannot mangle it.
fn decode_skiptoken(token: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v.get("NextMarker")?.as_str()?.parse().ok()
}

fn encode_skiptoken(offset: usize) -> String {
    URL_SAFE_NO_PAD
        .encode(json!({"NextMarker": offset.to_string(), "TargetLocation": 0}).to_string())
}

/// One page of `items`, with a `nextLink` back to `path` when more remain.
fn page(v: &Vault, req: &Req, api_version: &str, path: &str, items: Vec<Value>) -> Response<Body> {
    let max = match req.q("maxresults") {
        None => MAX_PAGE,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return bad_parameter("maxresults must be an integer between 1 and 25."),
        },
    };
    let start = match req.q("$skiptoken") {
        None => 0,
        Some(t) => match decode_skiptoken(t) {
            Some(n) => n.min(items.len()),
            None => return bad_parameter("The $skiptoken is invalid."),
        },
    };
    let end = (start + max).min(items.len());
    let next = if end < items.len() {
        let api: String = form_urlencoded::byte_serialize(api_version.as_bytes()).collect();
        let mut link = format!(
            "{}{path}?api-version={api}&$skiptoken={}",
            v.origin,
            encode_skiptoken(end)
        );
        // Recorded nextLinks keep `maxresults` after the token.
        if req.q("maxresults").is_some() {
            link.push_str(&format!("&maxresults={max}"));
        }
        Value::String(link)
    } else {
        Value::Null
    };
    let value: Vec<Value> = items.into_iter().skip(start).take(end - start).collect();
    http::json(200, &json!({"value": value, "nextLink": next}))
}

fn list(v: &Vault, req: &Req, api_version: &str, versions_of: Option<&str>) -> Response<Body> {
    let store = read(v);
    let (path, items): (String, Vec<Value>) = match versions_of {
        None => (
            "/secrets".to_owned(),
            store
                .secrets
                .values()
                .filter_map(|s| {
                    s.latest()
                        .map(|l| Value::Object(bundle(&v.origin, &s.name, l, false, false)))
                })
                .collect(),
        ),
        Some(name) => {
            let items = store
                .secrets
                .get(&name.to_ascii_lowercase())
                .map(|s| {
                    s.versions
                        .iter()
                        .map(|ver| Value::Object(bundle(&v.origin, &s.name, ver, false, true)))
                        .collect()
                })
                .unwrap_or_default();
            (format!("/secrets/{name}/versions"), items)
        }
    };
    drop(store);
    page(v, req, api_version, &path, items)
}

fn list_deleted(v: &Vault, req: &Req, api_version: &str) -> Response<Body> {
    let items: Vec<Value> = read(v)
        .deleted
        .values()
        .filter_map(|d| deleted_bundle(&v.origin, d, true))
        .collect();
    page(v, req, api_version, "/deletedsecrets", items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table() {
        let cases: &[(Method, &str, Result<Route<'_>, u16>)] = &[
            (Method::GET, "/secrets", Ok(Route::List)),
            (Method::GET, "/secrets/", Ok(Route::List)),
            (Method::GET, "/secrets/a", Ok(Route::Get("a", None))),
            (Method::GET, "/secrets/a/", Ok(Route::Get("a", None))),
            (
                Method::GET,
                "/secrets/a/v1",
                Ok(Route::Get("a", Some("v1"))),
            ),
            (
                Method::GET,
                "/secrets/a/v1/",
                Ok(Route::Get("a", Some("v1"))),
            ),
            (
                Method::GET,
                "/secrets/a/versions",
                Ok(Route::ListVersions("a")),
            ),
            (Method::PUT, "/secrets/a", Ok(Route::Set("a"))),
            (Method::PATCH, "/secrets/a/", Ok(Route::Update("a", None))),
            (
                Method::PATCH,
                "/secrets/a/v1",
                Ok(Route::Update("a", Some("v1"))),
            ),
            (Method::DELETE, "/secrets/a", Ok(Route::Delete("a"))),
            (Method::GET, "/deletedsecrets", Ok(Route::ListDeleted)),
            (Method::GET, "/deletedsecrets/a", Ok(Route::GetDeleted("a"))),
            (Method::DELETE, "/deletedsecrets/a", Ok(Route::Purge("a"))),
            (
                Method::POST,
                "/deletedsecrets/a/recover",
                Ok(Route::Recover("a")),
            ),
            (Method::POST, "/secrets/a", Err(405)),
            (Method::GET, "/keys/a", Err(404)),
            (Method::GET, "/secrets//x", Err(404)),
            (Method::GET, "/", Err(404)),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(m, p), *want, "{m} {p}");
        }
    }

    #[test]
    fn skiptoken_round_trip() {
        assert_eq!(decode_skiptoken(&encode_skiptoken(25)), Some(25));
        assert_eq!(decode_skiptoken("not a token"), None);
        assert!(!encode_skiptoken(7).contains(['+', '/', '=']));
    }

    #[test]
    fn attribute_patches() {
        let body = |s: &str| serde_json::from_str::<Map<String, Value>>(s).expect("json");
        assert_eq!(parse_attributes(&body("{}")), Ok(AttributePatch::default()));
        assert_eq!(
            parse_attributes(&body(
                r#"{"attributes":{"enabled":false,"exp":5,"nbf":null}}"#
            )),
            Ok(AttributePatch {
                enabled: Some(false),
                nbf: Some(None),
                exp: Some(Some(5)),
            })
        );
        assert!(parse_attributes(&body(r#"{"attributes":{"exp":"soon"}}"#)).is_err());
        assert!(parse_tags(&body(r#"{"tags":{"a":1}}"#)).is_err());
        assert_eq!(
            parse_content_type(&body(r#"{"contentType":null}"#)),
            Ok(Some(None))
        );
    }
}
