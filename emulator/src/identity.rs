//! Managed-identity token endpoints: IMDS and App Service (exported by
//! default), and Azure Arc, Cloud Shell, Service Fabric and Azure ML (served,
//! but only exported through their own env methods).
//!
//! Each answers in its own dialect, as the recordings show: IMDS sends every
//! number as a string, App Service 2019-08-01 a string epoch `expires_on`,
//! App Service 2017-09-01 a date string, Service Fabric and Azure ML numbers.

use hyper::{Method, Response};
use serde_json::{Value, json};

use crate::clock::{app_service_2017, now_secs};
use crate::config::IdentityConfig;
use crate::http::{self, Body, Req};
use crate::server::Shared;

/// Managed identity tokens live about a day, as the recordings show.
const MI_LIFETIME: i64 = 86_399;

/// How a request names its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selector<'a> {
    System,
    ClientId(&'a str),
    ObjectId(&'a str),
    ResourceId(&'a str),
}

#[derive(Debug, Clone, Copy)]
enum By {
    Client,
    Object,
    Resource,
}

/// Reads the selector from the query; `names` maps each parameter name of
/// this protocol to what it selects by. More than one selector is an error.
fn selector<'a>(req: &'a Req, names: &[(&str, By)]) -> Result<Selector<'a>, ()> {
    let mut found = None;
    for (name, by) in names {
        if let Some(v) = req.q(name).filter(|v| !v.is_empty()) {
            if found.is_some() {
                return Err(());
            }
            found = Some(match by {
                By::Client => Selector::ClientId(v),
                By::Object => Selector::ObjectId(v),
                By::Resource => Selector::ResourceId(v),
            });
        }
    }
    Ok(found.unwrap_or(Selector::System))
}

const IMDS_SELECTORS: [(&str, By); 3] = [
    ("client_id", By::Client),
    ("object_id", By::Object),
    ("msi_res_id", By::Resource),
];

const APP_SERVICE_SELECTORS: [(&str, By); 4] = [
    ("client_id", By::Client),
    ("principal_id", By::Object),
    ("object_id", By::Object),
    ("mi_res_id", By::Resource),
];

/// The managed identity a selector names. Ids compare case-insensitively
/// (GUIDs and ARM ids both are).
fn managed<'s>(s: &'s Shared, sel: Selector<'_>) -> Option<&'s IdentityConfig> {
    s.identities
        .iter()
        .filter(|i| i.kind.is_managed())
        .find(|i| match sel {
            Selector::System => i.kind == crate::config::IdentityKind::SystemAssigned,
            Selector::ClientId(c) => i.client_id.eq_ignore_ascii_case(c),
            Selector::ObjectId(o) => i.object_id.eq_ignore_ascii_case(o),
            Selector::ResourceId(r) => i
                .resource_id
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(r)),
        })
}

struct Issued {
    token: String,
    now: i64,
    expires_on: i64,
    lifetime: i64,
}

fn issue(s: &Shared, id: &IdentityConfig, resource: &str) -> Issued {
    let now = now_secs();
    let lifetime = s.token_lifetime(MI_LIFETIME);
    Issued {
        token: s
            .signer
            .access_token(&s.tenant_id, id, resource, now, lifetime),
        now,
        expires_on: now + lifetime,
        lifetime,
    }
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response<Body> {
    http::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn imds_headers(mut r: Response<Body>) -> Response<Body> {
    http::set_header(&mut r, "server", "IMDS/150.870.65.1475");
    http::set_header(&mut r, "x-ms-request-id", &crate::ids::new_guid());
    r
}

fn is_token_path(path: &str, want: &str) -> bool {
    path.trim_end_matches('/').eq_ignore_ascii_case(want)
}

/// IMDS `GET /metadata/identity/oauth2/token`.
pub(crate) fn imds(s: &Shared, req: &Req) -> Response<Body> {
    imds_headers(imds_inner(s, req))
}

fn imds_inner(s: &Shared, req: &Req) -> Response<Body> {
    if !is_token_path(&req.path, "/metadata/identity/oauth2/token") {
        return oauth_error(404, "not_found", "The requested path was not found");
    }
    if req.method != Method::GET {
        return oauth_error(405, "invalid_request", "Only GET is supported");
    }
    // What the real IMDS answers to a request without the header (the SDKs'
    // availability probe relies on it): mi-imds-400-missing-metadata-header.
    if req.header("metadata") != Some("true") {
        return oauth_error(
            400,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if req.q("api-version").is_none_or(str::is_empty) {
        return oauth_error(
            400,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = req.q("resource").filter(|r| !r.is_empty()) else {
        return oauth_error(
            400,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let Ok(sel) = selector(req, &IMDS_SELECTORS) else {
        return oauth_error(
            400,
            "invalid_request",
            "Only one of client_id, object_id and msi_res_id may be specified",
        );
    };
    let Some(id) = managed(s, sel) else {
        return oauth_error(400, "invalid_request", "Identity not found");
    };
    let t = issue(s, id, resource);
    // Every number is a string, as in mi-imds-token-200-*.json.
    http::json(
        200,
        &json!({
            "access_token": t.token,
            "client_id": id.client_id,
            "expires_in": t.lifetime.to_string(),
            "expires_on": t.expires_on.to_string(),
            "ext_expires_in": t.lifetime.to_string(),
            "not_before": t.now.to_string(),
            "refresh_token": "",
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

// App Service's error body is not documented; MSAL reads `statusCode` and
// `message`, MSAL.NET also `correlationId`. [UNCONFIRMED exact shape]
fn app_service_error(status: u16, message: &str) -> Response<Body> {
    http::json(
        status,
        &json!({"statusCode": status, "message": message, "correlationId": crate::ids::new_guid()}),
    )
}

/// App Service `GET /msi/token`, 2019-08-01 and legacy 2017-09-01.
pub(crate) fn app_service(s: &Shared, req: &Req) -> Response<Body> {
    if !is_token_path(&req.path, "/msi/token") {
        return app_service_error(404, "The requested path was not found");
    }
    if req.method != Method::GET {
        return app_service_error(405, "Only GET is supported");
    }
    let legacy = match req.q("api-version") {
        Some("2019-08-01") => false,
        Some("2017-09-01") => true,
        Some(other) => {
            return app_service_error(
                400,
                &format!(
                    "api-version '{other}' is not supported; use 2019-08-01 (or the legacy 2017-09-01)"
                ),
            );
        }
        None => return app_service_error(400, "The api-version query parameter is required"),
    };
    // 2019-08-01 authenticates with X-IDENTITY-HEADER, 2017-09-01 with `secret`
    // (header names are case-insensitive either way).
    let header = if legacy {
        "secret"
    } else {
        "x-identity-header"
    };
    match req.header(header) {
        None => return app_service_error(400, &format!("The {header} header is missing")),
        Some(v) if !crate::entra::constant_time_eq(v, &s.identity_header.0) => {
            return app_service_error(400, &format!("The {header} header is invalid"));
        }
        Some(_) => {}
    }
    let Some(resource) = req.q("resource").filter(|r| !r.is_empty()) else {
        return app_service_error(400, "The resource query parameter is required");
    };
    let sel = if legacy {
        match req.q("clientid").filter(|c| !c.is_empty()) {
            Some(c) => Ok(Selector::ClientId(c)),
            None => Ok(Selector::System),
        }
    } else {
        selector(req, &APP_SERVICE_SELECTORS)
    };
    let Ok(sel) = sel else {
        return app_service_error(
            400,
            "Only one of client_id, principal_id (object_id) and mi_res_id may be specified",
        );
    };
    let Some(id) = managed(s, sel) else {
        return app_service_error(400, "Identity not found");
    };
    let t = issue(s, id, resource);
    let expires_on = if legacy {
        // mi-appservice-token-200-api2017-09-01: `MM/dd/yyyy HH:mm:ss +00:00`.
        app_service_2017(t.expires_on)
    } else {
        t.expires_on.to_string()
    };
    http::json(
        200,
        &json!({
            "access_token": t.token,
            "expires_on": expires_on,
            "resource": resource,
            "token_type": "Bearer",
            "client_id": id.client_id,
        }),
    )
}

/// Azure Arc `GET /metadata/identity/oauth2/token`: a 401 naming a key file
/// in `WWW-Authenticate: Basic realm=<path>`, then the token for a request
/// that carries the file's content as `Authorization: Basic <content>`.
pub(crate) fn arc(s: &Shared, req: &Req) -> Response<Body> {
    if !is_token_path(&req.path, "/metadata/identity/oauth2/token") {
        return oauth_error(404, "not_found", "The requested path was not found");
    }
    if req.header("metadata") != Some("true") {
        return oauth_error(
            400,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let Some(resource) = req.q("resource").filter(|r| !r.is_empty()) else {
        return oauth_error(
            400,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let presented = req.header("authorization").and_then(|a| {
        a.strip_prefix("Basic ")
            .or_else(|| a.strip_prefix("basic "))
    });
    let valid = presented.is_some_and(|p| crate::entra::constant_time_eq(p.trim(), &s.arc_key.0));
    if !valid {
        let description = if presented.is_some() {
            "Invalid Basic Authorization header"
        } else {
            "Missing Basic Authorization header"
        };
        // mi-arc-1-token-401-basic-challenge-net-2020.json
        let mut r = http::bytes_response(
            401,
            "application/json",
            json!({"error": "unauthorized_client", "error_description": description,
                   "error_codes": [401], "timestamp": crate::clock::entra_timestamp(now_secs()),
                   "trace_id": "", "correlation_id": crate::ids::new_guid()})
            .to_string(),
        );
        http::set_header(
            &mut r,
            "www-authenticate",
            &format!("Basic realm={}", s.arc_key_path.display()),
        );
        return r;
    }
    let Ok(sel) = selector(req, &IMDS_SELECTORS) else {
        return oauth_error(
            400,
            "invalid_request",
            "Only one identity selector may be specified",
        );
    };
    let Some(id) = managed(s, sel) else {
        return oauth_error(400, "invalid_request", "Identity not found");
    };
    let t = issue(s, id, resource);
    let mut body = json!({
        "access_token": t.token,
        "expires_in": t.lifetime.to_string(),
        "expires_on": t.expires_on.to_string(),
        "ext_expires_in": t.lifetime,
        "not_before": t.now.to_string(),
        "refresh_token": "",
        "resource": resource,
        "token_type": "Bearer",
    });
    // MSAL-GO verifies that Arc echoes a requested user-assigned identity.
    if let (Selector::ClientId(_), Some(m)) = (sel, body.as_object_mut()) {
        m.insert("client_id".to_owned(), Value::String(id.client_id.clone()));
    }
    http::bytes_response(200, "application/json", body.to_string())
}

fn nested_error(status: u16, code: &str, message: &str) -> Response<Body> {
    http::json(
        status,
        &json!({"error": {"correlationId": crate::ids::new_guid(), "code": code, "message": message}}),
    )
}

/// Cloud Shell `POST /oauth2/token` with a form body `resource=…` and
/// `Metadata: true`. The response shape is not documented; this mirrors
/// IMDS's. \[UNCONFIRMED\]
pub(crate) fn cloud_shell(s: &Shared, req: &Req) -> Response<Body> {
    if !is_token_path(&req.path, "/oauth2/token") {
        return nested_error(404, "NotFound", "The requested path was not found");
    }
    if req.method != Method::POST {
        return nested_error(405, "MethodNotAllowed", "Only POST is supported");
    }
    if req.header("metadata") != Some("true") {
        return nested_error(400, "BadRequest", "Required metadata header not specified");
    }
    let form = req.form();
    let Some(resource) = form
        .iter()
        .find(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
    else {
        return nested_error(400, "BadRequest", "The resource form field is required");
    };
    let Some(id) = s.system_assigned() else {
        return nested_error(400, "BadRequest", "Identity not found");
    };
    let t = issue(s, id, resource);
    http::json(
        200,
        &json!({
            "access_token": t.token,
            "refresh_token": "",
            "expires_in": t.lifetime.to_string(),
            "expires_on": t.expires_on.to_string(),
            "not_before": t.now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

/// Service Fabric `GET /metadata/identity/oauth2/token` over HTTPS with the
/// pinned self-signed certificate; header `secret`, api-version
/// `2019-07-01-preview`, numeric `expires_on`.
pub(crate) fn service_fabric(s: &Shared, req: &Req) -> Response<Body> {
    if !is_token_path(&req.path, "/metadata/identity/oauth2/token") {
        return nested_error(404, "NotFound", "The requested path was not found");
    }
    match req.header("secret") {
        Some(v) if crate::entra::constant_time_eq(v, &s.identity_header.0) => {}
        // DOC-SF names the code; the status is an assumption. [UNCONFIRMED]
        _ => {
            return nested_error(
                401,
                "SecretHeaderNotFound",
                "Secret is not found in the request headers.",
            );
        }
    }
    if req.q("api-version") != Some("2019-07-01-preview") {
        return nested_error(
            400,
            "InvalidApiVersion",
            "The api-version is invalid; use 2019-07-01-preview.",
        );
    }
    let Some(resource) = req.q("resource").filter(|r| !r.is_empty()) else {
        return nested_error(
            400,
            "ArgumentNullOrEmpty",
            "The resource parameter is null or empty.",
        );
    };
    // MSAL.NET selects by object id as `principalId`; otherwise the
    // cluster's (system) identity.
    let sel = req
        .q("principalId")
        .filter(|p| !p.is_empty())
        .map_or(Selector::System, Selector::ObjectId);
    let Some(id) = managed(s, sel) else {
        return nested_error(
            404,
            "ManagedIdentityNotFound",
            "The managed identity was not found.",
        );
    };
    let t = issue(s, id, resource);
    // mi-servicefabric-token-200: `expires_on` a number, no `expires_in`.
    http::json(
        200,
        &json!({"token_type": "Bearer", "access_token": t.token, "expires_on": t.expires_on, "resource": resource}),
    )
}

/// Azure ML `GET {MSI_ENDPOINT}?api-version=2017-09-01&resource=…&clientid=…`
/// with header `secret`; numbers as numbers (mi-azureml-token-200).
pub(crate) fn azure_ml(s: &Shared, req: &Req) -> Response<Body> {
    if !is_token_path(&req.path, "/token") {
        return oauth_error(404, "not_found", "The requested path was not found");
    }
    match req.header("secret") {
        Some(v) if crate::entra::constant_time_eq(v, &s.identity_header.0) => {}
        _ => {
            return oauth_error(
                401,
                "unauthorized",
                "The secret header is missing or invalid",
            );
        }
    }
    if req.q("api-version") != Some("2017-09-01") {
        return oauth_error(400, "invalid_request", "api-version must be 2017-09-01");
    }
    let Some(resource) = req.q("resource").filter(|r| !r.is_empty()) else {
        return oauth_error(
            400,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let sel = req
        .q("clientid")
        .filter(|c| !c.is_empty())
        .map_or(Selector::System, Selector::ClientId);
    let Some(id) = managed(s, sel) else {
        return oauth_error(400, "invalid_request", "Identity not found");
    };
    let t = issue(s, id, resource);
    http::bytes_response(
        200,
        "application/json",
        json!({"access_token": t.token, "expires_in": t.lifetime, "expires_on": t.expires_on,
               "resource": resource, "token_type": "Bearer"})
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(query: &str) -> Req {
        Req {
            method: Method::GET,
            path: "/".to_owned(),
            query: http::parse_query(query),
            headers: hyper::HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn selector_table() {
        let cases: &[(&str, Result<Selector<'_>, ()>)] = &[
            ("resource=x", Ok(Selector::System)),
            ("client_id=abc", Ok(Selector::ClientId("abc"))),
            ("object_id=o", Ok(Selector::ObjectId("o"))),
            (
                "msi_res_id=%2Fsubs%2Fx",
                Ok(Selector::ResourceId("/subs/x")),
            ),
            ("client_id=", Ok(Selector::System)),
            ("client_id=a&object_id=b", Err(())),
        ];
        for (q, want) in cases {
            let r = req(q);
            assert_eq!(selector(&r, &IMDS_SELECTORS), *want, "{q}");
        }
        let r = req("principal_id=p");
        assert_eq!(
            selector(&r, &APP_SERVICE_SELECTORS),
            Ok(Selector::ObjectId("p"))
        );
        let r = req("mi_res_id=r");
        assert_eq!(
            selector(&r, &APP_SERVICE_SELECTORS),
            Ok(Selector::ResourceId("r"))
        );
        // IMDS does not know App Service's parameter name.
        let r = req("mi_res_id=r");
        assert_eq!(selector(&r, &IMDS_SELECTORS), Ok(Selector::System));
    }
}
