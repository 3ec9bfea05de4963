//! The emulator's TOML configuration: the schema (`Raw*` types, read with
//! serde and `deny_unknown_fields`), its validation into the checked model the
//! servers use, and errors that point at `file:line:column`.
//!
//! Every key is documented in `emulator/README.md`. Names that other entries
//! refer to (vaults, identities) are read as `toml::Spanned` so that a
//! cross-reference error can point at the offending value, not just the file.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ring::digest;
use serde::Deserialize;
use toml::Spanned;

/// Tenant used when the config names none. GUID-shaped so that clients which
/// validate tenant ids accept it; the `0000-4000-8000` middle marks it as made up.
pub const DEFAULT_TENANT_ID: &str = "72f988bf-0000-4000-8000-000000000001";
/// Audience of the federated (workload identity) tokens the emulator writes,
/// as on AKS.
pub const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
const DEFAULT_ISSUER: &str = "https://oidc.kvrun-emulator.test/cluster";
const DEFAULT_SUBJECT: &str = "system:serviceaccount:default:app";
const DEFAULT_REGION: &str = "westus";

/// A configuration error: where it is (`origin:line:column`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name (or other origin label) the text came from.
    pub origin: String,
    /// 1-based line, or 0 when the error is about the file as a whole.
    pub line: usize,
    /// 1-based column in characters, or 0 when `line` is 0.
    pub column: usize,
    /// What is wrong, one line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.origin, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// A value that must never reach a log or a `Debug` print (secret values,
/// client secrets).
#[derive(Clone, PartialEq, Eq, Default)]
pub(crate) struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"(redacted)\"")
    }
}

impl<'de> Deserialize<'de> for Redacted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Redacted)
    }
}

// ---------------------------------------------------------------------------
// Checked model
// ---------------------------------------------------------------------------

/// The emulator's configuration. `Default` is one vault (`demo`, RBAC) and one
/// system-assigned managed identity that may get, list, set and delete in it.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) tenant_id: String,
    pub(crate) region: String,
    pub(crate) access_token_lifetime_secs: Option<i64>,
    pub(crate) vaults: Vec<VaultConfig>,
    pub(crate) identities: Vec<IdentityConfig>,
    pub(crate) grants: Vec<GrantConfig>,
    pub(crate) imds: EndpointConfig,
    pub(crate) app_service: EndpointConfig,
    pub(crate) entra: EndpointConfig,
    pub(crate) arc: EndpointConfig,
    pub(crate) cloud_shell: EndpointConfig,
    pub(crate) service_fabric: EndpointConfig,
    pub(crate) azure_ml: EndpointConfig,
    pub(crate) faults: Vec<FaultConfig>,
    /// Relative paths in the config (certificates, token files) are resolved
    /// against this directory: the config file's own for [`Config::load`].
    pub(crate) base_dir: Option<PathBuf>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) request_log: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub(crate) struct VaultConfig {
    pub name: String,
    /// DNS name the vault answers as (its certificate names it and its URL uses
    /// it), e.g. `demo.vault.azure.net`; clients map it to 127.0.0.1 themselves.
    pub host: Option<String>,
    pub port: u16,
    pub authorization: Authorization,
    pub tls: TlsMode,
    pub latency_ms: u64,
    pub throttle: Option<Throttle>,
    pub secrets: Vec<SecretSeed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Authorization {
    Rbac,
    AccessPolicy,
}

/// How a vault's server certificate is made, to let client TLS failures be tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TlsMode {
    /// Signed by the run's CA, SANs 127.0.0.1, ::1, localhost.
    Valid,
    /// Signed by the run's CA but its validity ended in the past.
    Expired,
    /// Signed by the run's CA but names only `wrong-host.kvrun-emulator.test`.
    WrongHost,
    /// Signed by a second CA that is never written out.
    Untrusted,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Throttle {
    /// Bucket size and refill amount.
    pub requests: u32,
    /// Refill period: `requests` tokens per `per_seconds` seconds.
    pub per_seconds: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct SecretSeed {
    pub name: String,
    pub versions: Vec<VersionSeed>,
}

#[derive(Debug, Clone)]
pub(crate) struct VersionSeed {
    pub id: Option<String>,
    pub value: Redacted,
    pub enabled: bool,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum IdentityKind {
    SystemAssigned,
    UserAssigned,
    ServicePrincipal,
    Workload,
}

impl IdentityKind {
    pub(crate) fn is_managed(self) -> bool {
        matches!(self, Self::SystemAssigned | Self::UserAssigned)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct IdentityConfig {
    pub name: String,
    pub kind: IdentityKind,
    pub client_id: String,
    pub object_id: String,
    pub resource_id: Option<String>,
    pub secret: Option<Redacted>,
    pub certificate: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub token_lifetime_secs: i64,
}

/// Secret permissions, as access policies name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Permission {
    Get,
    List,
    Set,
    Delete,
    Recover,
    Purge,
}

impl Permission {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Set => "set",
            Self::Delete => "delete",
            Self::Recover => "recover",
            Self::Purge => "purge",
        }
    }

    const ALL: [Permission; 6] = [
        Self::Get,
        Self::List,
        Self::Set,
        Self::Delete,
        Self::Recover,
        Self::Purge,
    ];
}

#[derive(Debug, Clone)]
pub(crate) struct GrantConfig {
    pub identity: String,
    pub vault: String,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct EndpointConfig {
    pub port: u16,
    pub latency_ms: u64,
    pub throttle: Option<Throttle>,
    /// `[arc]` only: where the agent's challenge key files go. Real clients accept
    /// key files only in the agent's own directory (`/var/opt/azcmagent/tokens` on
    /// Linux); by default the emulator writes into its state directory.
    pub key_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub(crate) struct FaultConfig {
    pub endpoint: String,
    pub path: Option<String>,
    pub method: Option<String>,
    /// Some(true): only requests with an Authorization header; Some(false): only
    /// those without one.
    pub authorized: Option<bool>,
    pub window: FaultWindow,
    pub action: FaultAction,
    pub status: u16,
    pub retry_after: RetryAfter,
    pub size_bytes: u64,
    /// `oversized-body`: announce the size in Content-Length (default), or not.
    pub content_length: bool,
    pub delay_ms: u64,
    pub location: Option<String>,
    pub resource: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultWindow {
    Always,
    First(u64),
    ForMs(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FaultAction {
    Status,
    Reset,
    ResetMidBody,
    MalformedJson,
    TruncatedJson,
    OversizedBody,
    SlowBody,
    Hang,
    Redirect,
    ChallengeResource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryAfter {
    None,
    Seconds(u64),
    HttpDate(u64),
    Millis(u64),
}

// ---------------------------------------------------------------------------
// Raw schema
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tenant_id: Option<Spanned<String>>,
    region: Option<String>,
    access_token_lifetime_secs: Option<Spanned<i64>>,
    #[serde(default)]
    vault: Vec<RawVault>,
    #[serde(default)]
    identity: Vec<RawIdentity>,
    #[serde(default)]
    grant: Vec<RawGrant>,
    imds: Option<RawEndpoint>,
    app_service: Option<RawEndpoint>,
    entra: Option<RawEndpoint>,
    arc: Option<RawEndpoint>,
    cloud_shell: Option<RawEndpoint>,
    service_fabric: Option<RawEndpoint>,
    azure_ml: Option<RawEndpoint>,
    #[serde(default)]
    fault: Vec<RawFault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    name: Spanned<String>,
    host: Option<Spanned<String>>,
    port: Option<u16>,
    authorization: Option<Authorization>,
    tls: Option<TlsMode>,
    latency_ms: Option<u64>,
    throttle: Option<Spanned<Throttle>>,
    #[serde(default)]
    secret: Vec<RawSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    name: Spanned<String>,
    value: Option<Redacted>,
    enabled: Option<bool>,
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    nbf: Option<i64>,
    exp: Option<i64>,
    #[serde(default)]
    version: Vec<RawVersion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    id: Option<Spanned<String>>,
    value: Redacted,
    enabled: Option<bool>,
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: Spanned<String>,
    kind: Spanned<IdentityKind>,
    client_id: Option<Spanned<String>>,
    object_id: Option<Spanned<String>>,
    resource_id: Option<String>,
    secret: Option<Redacted>,
    certificate: Option<PathBuf>,
    token_file: Option<PathBuf>,
    issuer: Option<String>,
    subject: Option<String>,
    audience: Option<String>,
    token_lifetime_secs: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    identity: Spanned<String>,
    vault: Spanned<String>,
    permissions: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    port: Option<u16>,
    latency_ms: Option<u64>,
    throttle: Option<Spanned<Throttle>>,
    key_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    endpoint: Spanned<String>,
    path: Option<String>,
    method: Option<String>,
    authorized: Option<bool>,
    first: Option<u64>,
    for_ms: Option<u64>,
    status: Option<Spanned<u16>>,
    action: Option<Spanned<FaultAction>>,
    retry_after: Option<Spanned<String>>,
    retry_after_http_date: Option<u64>,
    retry_after_ms: Option<u64>,
    size_bytes: Option<u64>,
    content_length: Option<bool>,
    delay_ms: Option<u64>,
    location: Option<String>,
    resource: Option<String>,
}

// ---------------------------------------------------------------------------
// Parsing and validation
// ---------------------------------------------------------------------------

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError {
            origin: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Vault names: 3-24 of `0-9 a-z A-Z -`, no consecutive hyphens, starting with
/// a letter and ending with a letter or digit (Key Vault's naming rule).
pub(crate) fn valid_vault_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=24).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("--")
}

/// Secret names: 1-127 of `0-9 a-z A-Z -`.
pub(crate) fn valid_secret_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// Secret versions: 32 lowercase hex characters, as Key Vault generates them.
pub(crate) fn valid_version_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A DNS host name: at least two labels of 1-63 letters, digits and inner hyphens.
fn valid_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').count() >= 2
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_label(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Ids clients send in query strings and form bodies: no whitespace or
/// characters that would need escaping to be compared reliably.
fn valid_id(id: &str) -> bool {
    (1..=256).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/' | b':'))
}

/// A GUID derived from a seed, so that a config without explicit ids still
/// gives the same client and object ids on every run (tests can hard-code them).
pub(crate) fn derived_guid(seed: &str) -> String {
    let d = digest::digest(&digest::SHA256, seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    crate::ids::format_guid(&b)
}

fn default_resource_id(name: &str) -> String {
    format!(
        "/subscriptions/00000000-0000-4000-8000-000000000000/resourcegroups/kvrun-emulator/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

fn endpoint(
    ctx: &Ctx<'_>,
    name: &str,
    raw: Option<RawEndpoint>,
) -> Result<EndpointConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(EndpointConfig::default());
    };
    let key_dir = match raw.key_dir {
        Some(dir) if name != "arc" => {
            return Err(ctx.err(
                dir.span(),
                format!("key_dir belongs in [arc], not [{name}]"),
            ));
        }
        Some(dir) => Some(PathBuf::from(dir.into_inner())),
        None => None,
    };
    Ok(EndpointConfig {
        port: raw.port.unwrap_or(0),
        latency_ms: raw.latency_ms.unwrap_or(0),
        throttle: raw.throttle.map(|t| throttle(ctx, t)).transpose()?,
        key_dir,
    })
}

fn throttle(ctx: &Ctx<'_>, t: Spanned<Throttle>) -> Result<Throttle, ConfigError> {
    let span = t.span();
    let t = t.into_inner();
    if t.requests == 0 || !(t.per_seconds > 0.0 && t.per_seconds.is_finite()) {
        return Err(ctx.err(span, "throttle needs requests >= 1 and per_seconds > 0"));
    }
    Ok(t)
}

fn parse_permissions(
    ctx: &Ctx<'_>,
    raw: Vec<Spanned<String>>,
) -> Result<Vec<Permission>, ConfigError> {
    let mut out = Vec::new();
    for p in raw {
        let span = p.span();
        let p = p.into_inner();
        let parsed: &[Permission] = match p.as_str() {
            "get" => &[Permission::Get],
            "list" => &[Permission::List],
            "set" => &[Permission::Set],
            "delete" => &[Permission::Delete],
            "recover" => &[Permission::Recover],
            "purge" => &[Permission::Purge],
            "all" => &Permission::ALL,
            other => {
                return Err(ctx.err(
                    span,
                    format!(
                        "unknown permission `{other}`, expected one of get, list, set, delete, recover, purge, all"
                    ),
                ));
            }
        };
        out.extend_from_slice(parsed);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl Config {
    /// Parses and validates a TOML configuration. `origin` names the text in
    /// errors (normally the file name).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx { text, origin };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            // toml's message can span lines (it quotes the input); keep the first.
            let message = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .trim()
                .to_owned();
            ctx.err(span, message)
        })?;
        Self::validate(&ctx, raw)
    }

    /// Reads and validates a configuration file. Relative paths inside it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let mut config = Self::from_toml(&text, &origin)?;
        config.base_dir = path.parent().map(Path::to_path_buf);
        Ok(config)
    }

    /// Uses `dir` for the CA certificate and token files instead of a fresh
    /// private directory under the temp dir. A directory the emulator creates
    /// is removed on shutdown; an existing one keeps everything but the files
    /// the emulator wrote.
    #[must_use]
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Appends one JSON line per request to `path` (see the README for the format).
    #[must_use]
    pub fn with_request_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.request_log = Some(path.into());
        self
    }

    /// Client id of the configured identity called `name`.
    pub fn identity_client_id(&self, name: &str) -> Option<String> {
        self.identities
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.client_id.clone())
    }

    /// Object (principal) id of the configured identity called `name`.
    pub fn identity_object_id(&self, name: &str) -> Option<String> {
        self.identities
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.object_id.clone())
    }

    fn empty(tenant_id: String) -> Config {
        Config {
            tenant_id,
            region: DEFAULT_REGION.to_owned(),
            access_token_lifetime_secs: None,
            vaults: Vec::new(),
            identities: Vec::new(),
            grants: Vec::new(),
            imds: EndpointConfig::default(),
            app_service: EndpointConfig::default(),
            entra: EndpointConfig::default(),
            arc: EndpointConfig::default(),
            cloud_shell: EndpointConfig::default(),
            service_fabric: EndpointConfig::default(),
            azure_ml: EndpointConfig::default(),
            faults: Vec::new(),
            base_dir: None,
            state_dir: None,
            request_log: None,
        }
    }

    #[allow(clippy::too_many_lines)] // One pass over the schema reads best top to bottom.
    fn validate(ctx: &Ctx<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
        let tenant_id = match raw.tenant_id {
            Some(t) => {
                let span = t.span();
                let t = t.into_inner();
                // Same character set the SDKs accept for tenant ids.
                if t.is_empty()
                    || !t
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
                {
                    return Err(ctx.err(span, "tenant_id must be 1 or more of A-Z a-z 0-9 . -"));
                }
                t
            }
            None => DEFAULT_TENANT_ID.to_owned(),
        };
        let mut config = Config::empty(tenant_id);
        if let Some(region) = raw.region {
            config.region = region;
        }
        if let Some(l) = raw.access_token_lifetime_secs {
            if *l.get_ref() < 60 {
                return Err(ctx.err(l.span(), "access_token_lifetime_secs must be at least 60"));
            }
            config.access_token_lifetime_secs = Some(l.into_inner());
        }

        // Vaults and their secrets.
        let mut vault_names = HashSet::new();
        for v in raw.vault {
            let span = v.name.span();
            let name = v.name.into_inner();
            if !valid_vault_name(&name) {
                return Err(ctx.err(
                    span,
                    format!(
                        "invalid vault name `{name}`: 3-24 letters, digits and single hyphens, starting with a letter"
                    ),
                ));
            }
            if !vault_names.insert(name.to_ascii_lowercase()) {
                return Err(ctx.err(span, format!("duplicate vault name `{name}`")));
            }
            let mut secrets = Vec::new();
            let mut secret_names = HashSet::new();
            for s in v.secret {
                let sspan = s.name.span();
                let sname = s.name.into_inner();
                if !valid_secret_name(&sname) {
                    return Err(ctx.err(
                        sspan,
                        format!("invalid secret name `{sname}`: 1-127 letters, digits and hyphens"),
                    ));
                }
                if !secret_names.insert(sname.to_ascii_lowercase()) {
                    return Err(ctx.err(
                        sspan,
                        format!("duplicate secret `{sname}` in vault `{name}` (names are case-insensitive)"),
                    ));
                }
                let versions = match (s.value, s.version.is_empty()) {
                    (Some(value), true) => vec![VersionSeed {
                        id: None,
                        value,
                        enabled: s.enabled.unwrap_or(true),
                        content_type: s.content_type,
                        tags: s.tags.unwrap_or_default(),
                        nbf: s.nbf,
                        exp: s.exp,
                    }],
                    (None, false) => {
                        if s.enabled.is_some()
                            || s.content_type.is_some()
                            || s.tags.is_some()
                            || s.nbf.is_some()
                            || s.exp.is_some()
                        {
                            return Err(ctx.err(
                                sspan,
                                format!(
                                    "secret `{sname}` has [[vault.secret.version]] entries: put enabled, content_type, tags, nbf and exp on each version"
                                ),
                            ));
                        }
                        let mut out = Vec::new();
                        let mut ids = HashSet::new();
                        for ver in s.version {
                            let id = match ver.id {
                                Some(id) => {
                                    let ispan = id.span();
                                    let id = id.into_inner();
                                    if !valid_version_id(&id) {
                                        return Err(ctx.err(
                                            ispan,
                                            format!("invalid version id `{id}`: 32 lowercase hex characters"),
                                        ));
                                    }
                                    if !ids.insert(id.clone()) {
                                        return Err(
                                            ctx.err(ispan, format!("duplicate version id `{id}`"))
                                        );
                                    }
                                    Some(id)
                                }
                                None => None,
                            };
                            out.push(VersionSeed {
                                id,
                                value: ver.value,
                                enabled: ver.enabled.unwrap_or(true),
                                content_type: ver.content_type,
                                tags: ver.tags.unwrap_or_default(),
                                nbf: ver.nbf,
                                exp: ver.exp,
                            });
                        }
                        out
                    }
                    (Some(_), false) => {
                        return Err(ctx.err(
                            sspan,
                            format!("secret `{sname}` has both `value` and [[vault.secret.version]] entries; use one"),
                        ));
                    }
                    (None, true) => {
                        return Err(ctx.err(
                            sspan,
                            format!("secret `{sname}` needs a `value` or [[vault.secret.version]] entries"),
                        ));
                    }
                };
                if let Some(big) = versions
                    .iter()
                    .find(|v| v.value.0.len() > crate::keyvault::MAX_VALUE_BYTES)
                {
                    return Err(ctx.err(
                        sspan,
                        format!(
                            "secret `{sname}` has a value of {} bytes; Key Vault allows at most {}",
                            big.value.0.len(),
                            crate::keyvault::MAX_VALUE_BYTES
                        ),
                    ));
                }
                secrets.push(SecretSeed {
                    name: sname,
                    versions,
                });
            }
            let host = match v.host {
                None => None,
                Some(h) => {
                    let span = h.span();
                    let h = h.into_inner().to_ascii_lowercase();
                    if !valid_dns_name(&h) {
                        return Err(ctx.err(
                            span,
                            format!("invalid host `{h}`: a DNS name of dot-separated labels (letters, digits, hyphens)"),
                        ));
                    }
                    Some(h)
                }
            };
            config.vaults.push(VaultConfig {
                name,
                host,
                port: v.port.unwrap_or(0),
                authorization: v.authorization.unwrap_or(Authorization::Rbac),
                tls: v.tls.unwrap_or(TlsMode::Valid),
                latency_ms: v.latency_ms.unwrap_or(0),
                throttle: v.throttle.map(|t| throttle(ctx, t)).transpose()?,
                secrets,
            });
        }

        // Identities.
        let mut identity_names = HashSet::new();
        let mut client_ids = HashSet::new();
        let mut object_ids = HashSet::new();
        let mut system_assigned = false;
        for i in raw.identity {
            let span = i.name.span();
            let name = i.name.into_inner();
            if !valid_label(&name) {
                return Err(ctx.err(
                    span,
                    format!(
                        "invalid identity name `{name}`: 1-64 letters, digits, `-`, `_` or `.`"
                    ),
                ));
            }
            if !identity_names.insert(name.clone()) {
                return Err(ctx.err(span, format!("duplicate identity name `{name}`")));
            }
            let kind_span = i.kind.span();
            let kind = i.kind.into_inner();
            let check_id =
                |id: Option<Spanned<String>>, what: &str| -> Result<String, ConfigError> {
                    match id {
                        Some(id) => {
                            let s = id.span();
                            let id = id.into_inner();
                            if valid_id(&id) {
                                Ok(id)
                            } else {
                                Err(ctx.err(s, format!("invalid {what} `{id}`")))
                            }
                        }
                        None => Ok(derived_guid(&format!(
                            "kvrun-emulator/{}/{name}/{what}",
                            config.tenant_id
                        ))),
                    }
                };
            let client_id = check_id(i.client_id, "client_id")?;
            let object_id = check_id(i.object_id, "object_id")?;
            if !client_ids.insert(client_id.to_ascii_lowercase()) {
                return Err(ctx.err(
                    span,
                    format!("identity `{name}` reuses client_id `{client_id}`"),
                ));
            }
            if !object_ids.insert(object_id.to_ascii_lowercase()) {
                return Err(ctx.err(
                    span,
                    format!("identity `{name}` reuses object_id `{object_id}`"),
                ));
            }
            let only_for = |present: bool, key: &str, kinds: &str| -> Result<(), ConfigError> {
                if present {
                    Err(ctx.err(
                        span.clone(),
                        format!("identity `{name}`: `{key}` applies only to {kinds} identities"),
                    ))
                } else {
                    Ok(())
                }
            };
            let not_sp = kind != IdentityKind::ServicePrincipal;
            only_for(not_sp && i.secret.is_some(), "secret", "service-principal")?;
            only_for(
                not_sp && i.certificate.is_some(),
                "certificate",
                "service-principal",
            )?;
            let not_wl = kind != IdentityKind::Workload;
            only_for(not_wl && i.token_file.is_some(), "token_file", "workload")?;
            only_for(not_wl && i.issuer.is_some(), "issuer", "workload")?;
            only_for(not_wl && i.subject.is_some(), "subject", "workload")?;
            only_for(not_wl && i.audience.is_some(), "audience", "workload")?;
            only_for(
                not_wl && i.token_lifetime_secs.is_some(),
                "token_lifetime_secs",
                "workload",
            )?;
            match kind {
                IdentityKind::SystemAssigned => {
                    if system_assigned {
                        return Err(
                            ctx.err(kind_span, "only one system-assigned identity is allowed")
                        );
                    }
                    system_assigned = true;
                }
                IdentityKind::ServicePrincipal => {
                    if i.secret.is_none() && i.certificate.is_none() {
                        return Err(ctx.err(
                            span,
                            format!(
                                "service principal `{name}` needs a `secret` or a `certificate`"
                            ),
                        ));
                    }
                }
                IdentityKind::UserAssigned | IdentityKind::Workload => {}
            }
            let resource_id = match (kind, i.resource_id) {
                (_, Some(r)) => Some(r),
                (IdentityKind::UserAssigned, None) => Some(default_resource_id(&name)),
                _ => None,
            };
            config.identities.push(IdentityConfig {
                name,
                kind,
                client_id,
                object_id,
                resource_id,
                secret: i.secret,
                certificate: i.certificate,
                token_file: i.token_file,
                issuer: i.issuer.unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
                subject: i.subject.unwrap_or_else(|| DEFAULT_SUBJECT.to_owned()),
                audience: i.audience.unwrap_or_else(|| FEDERATION_AUDIENCE.to_owned()),
                token_lifetime_secs: i.token_lifetime_secs.unwrap_or(3600),
            });
        }

        // Grants.
        for g in raw.grant {
            let ispan = g.identity.span();
            let identity = g.identity.into_inner();
            if !identity_names.contains(&identity) {
                return Err(ctx.err(ispan, format!("grant names unknown identity `{identity}`")));
            }
            let vspan = g.vault.span();
            let vault = g.vault.into_inner();
            if !vault_names.contains(&vault.to_ascii_lowercase()) {
                return Err(ctx.err(vspan, format!("grant names unknown vault `{vault}`")));
            }
            let permissions = parse_permissions(ctx, g.permissions)?;
            config.grants.push(GrantConfig {
                identity,
                vault,
                permissions,
            });
        }

        config.imds = endpoint(ctx, "imds", raw.imds)?;
        config.app_service = endpoint(ctx, "app_service", raw.app_service)?;
        config.entra = endpoint(ctx, "entra", raw.entra)?;
        config.arc = endpoint(ctx, "arc", raw.arc)?;
        config.cloud_shell = endpoint(ctx, "cloud_shell", raw.cloud_shell)?;
        config.service_fabric = endpoint(ctx, "service_fabric", raw.service_fabric)?;
        config.azure_ml = endpoint(ctx, "azure_ml", raw.azure_ml)?;

        for f in raw.fault {
            config.faults.push(fault(ctx, &vault_names, f)?);
        }
        Ok(config)
    }
}

const ENDPOINT_NAMES: &[&str] = &[
    "imds",
    "app-service",
    "entra",
    "arc",
    "cloud-shell",
    "service-fabric",
    "azure-ml",
];

fn fault(ctx: &Ctx<'_>, vaults: &HashSet<String>, f: RawFault) -> Result<FaultConfig, ConfigError> {
    let espan = f.endpoint.span();
    let endpoint = f.endpoint.into_inner();
    let known = match endpoint.strip_prefix("vault:") {
        Some(v) => vaults.contains(&v.to_ascii_lowercase()),
        None => ENDPOINT_NAMES.contains(&endpoint.as_str()),
    };
    if !known {
        return Err(ctx.err(
            espan,
            format!(
                "unknown fault endpoint `{endpoint}`, expected one of {}, or vault:<name> of a configured vault",
                ENDPOINT_NAMES.join(", ")
            ),
        ));
    }
    let window = match (f.first, f.for_ms) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(espan, "a fault takes `first` or `for_ms`, not both"));
        }
        (Some(k), None) => FaultWindow::First(k),
        (None, Some(ms)) => FaultWindow::ForMs(ms),
        (None, None) => FaultWindow::Always,
    };
    let (action, aspan) = match f.action {
        Some(a) => {
            let s = a.span();
            (a.into_inner(), s)
        }
        None => (FaultAction::Status, espan.clone()),
    };
    let retry_count = usize::from(f.retry_after.is_some())
        + usize::from(f.retry_after_http_date.is_some())
        + usize::from(f.retry_after_ms.is_some());
    if retry_count > 1 {
        return Err(ctx.err(
            espan,
            "use one of retry_after, retry_after_http_date, retry_after_ms",
        ));
    }
    let retry_after = if let Some(r) = f.retry_after {
        let rspan = r.span();
        match r.get_ref().trim().parse::<u64>() {
            Ok(s) => RetryAfter::Seconds(s),
            Err(_) => {
                return Err(ctx.err(
                    rspan,
                    "retry_after must be a whole number of seconds, e.g. \"2\"",
                ));
            }
        }
    } else if let Some(s) = f.retry_after_http_date {
        RetryAfter::HttpDate(s)
    } else if let Some(ms) = f.retry_after_ms {
        RetryAfter::Millis(ms)
    } else {
        RetryAfter::None
    };
    let (status, sspan) = match f.status {
        Some(s) => {
            let sp = s.span();
            (Some(s.into_inner()), sp)
        }
        None => (None, aspan.clone()),
    };
    let status = match action {
        FaultAction::Status => match status {
            Some(s) if (100..=599).contains(&s) => s,
            Some(_) => return Err(ctx.err(sspan, "status must be 100-599")),
            None => return Err(ctx.err(aspan, "a `status` fault needs `status = <code>`")),
        },
        FaultAction::Redirect => {
            let s = status.unwrap_or(307);
            if ![301, 302, 303, 307, 308].contains(&s) {
                return Err(ctx.err(sspan, "a redirect status must be 301, 302, 303, 307 or 308"));
            }
            if f.location.is_none() {
                return Err(ctx.err(aspan, "a `redirect` fault needs `location`"));
            }
            s
        }
        FaultAction::ChallengeResource => {
            if f.resource.is_none() {
                return Err(ctx.err(aspan, "a `challenge-resource` fault needs `resource`"));
            }
            if !endpoint.starts_with("vault:") {
                return Err(ctx.err(
                    espan,
                    "`challenge-resource` applies to vault endpoints only",
                ));
            }
            status.unwrap_or(401)
        }
        FaultAction::OversizedBody => {
            if f.size_bytes.is_none() {
                return Err(ctx.err(aspan, "an `oversized-body` fault needs `size_bytes`"));
            }
            status.unwrap_or(200)
        }
        _ => status.unwrap_or(200),
    };
    if f.content_length.is_some() && action != FaultAction::OversizedBody {
        return Err(ctx.err(aspan, "`content_length` applies to `oversized-body` only"));
    }
    Ok(FaultConfig {
        endpoint,
        path: f.path,
        method: f.method.map(|m| m.to_ascii_uppercase()),
        authorized: f.authorized,
        window,
        action,
        status,
        retry_after,
        size_bytes: f.size_bytes.unwrap_or(0),
        content_length: f.content_length.unwrap_or(true),
        delay_ms: f.delay_ms.unwrap_or(1000),
        location: f.location,
        resource: f.resource,
    })
}

impl Default for Config {
    fn default() -> Config {
        // Built through the parser so that the default gets the same derived
        // ids as an equivalent config file.
        let text = "[[vault]]\nname = \"demo\"\n\n[[identity]]\nname = \"system\"\nkind = \"system-assigned\"\n\n[[grant]]\nidentity = \"system\"\nvault = \"demo\"\npermissions = [\"get\", \"list\", \"set\", \"delete\"]\n";
        match Config::from_toml(text, "<default>") {
            Ok(c) => c,
            // The text above is fixed and covered by a test; this arm only
            // keeps the function total.
            Err(_) => Config::empty(DEFAULT_TENANT_ID.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config() {
        let c = Config::default();
        assert_eq!(c.tenant_id, DEFAULT_TENANT_ID);
        assert_eq!(c.vaults.len(), 1);
        assert_eq!(c.vaults[0].name, "demo");
        assert_eq!(c.vaults[0].authorization, Authorization::Rbac);
        assert_eq!(c.identities.len(), 1);
        assert_eq!(c.identities[0].kind, IdentityKind::SystemAssigned);
        assert_eq!(
            c.grants[0].permissions,
            vec![
                Permission::Get,
                Permission::List,
                Permission::Set,
                Permission::Delete
            ]
        );
        // Stable across runs.
        assert_eq!(
            c.identity_client_id("system"),
            Config::default().identity_client_id("system")
        );
    }

    #[test]
    fn good_configs() {
        let full = r#"
tenant_id = "11111111-2222-4333-8444-555555555555"
region = "eastus"
[[vault]]
name = "demo"
port = 0
authorization = "access-policy"
tls = "expired"
latency_ms = 5
throttle = { requests = 10, per_seconds = 1 }
[[vault.secret]]
name = "db-password"
value = "s3cret"
content_type = "text/plain"
tags = { owner = "team-a" }
[[vault.secret]]
name = "rotated"
[[vault.secret.version]]
id = "0123456789abcdef0123456789abcdef"
value = "old"
enabled = false
[[vault.secret.version]]
value = "new"
exp = 2000000000
[[identity]]
name = "system"
kind = "system-assigned"
[[identity]]
name = "uami"
kind = "user-assigned"
client_id = "aaaaaaaa-0000-4000-8000-000000000001"
[[identity]]
name = "sp"
kind = "service-principal"
secret = "pw"
[[identity]]
name = "wl"
kind = "workload"
token_lifetime_secs = -10
[[grant]]
identity = "uami"
vault = "demo"
permissions = ["all"]
[imds]
latency_ms = 1
throttle = { requests = 5, per_seconds = 1 }
[[fault]]
endpoint = "imds"
first = 1
status = 410
[[fault]]
endpoint = "vault:demo"
path = "/secrets/db-password"
for_ms = 1000
status = 429
retry_after = "1"
[[fault]]
endpoint = "vault:demo"
action = "redirect"
location = "https://evil.example/"
"#;
        let c = Config::from_toml(full, "full.toml").expect("valid");
        assert_eq!(c.region, "eastus");
        assert_eq!(c.vaults[0].tls, TlsMode::Expired);
        assert_eq!(c.vaults[0].secrets[1].versions.len(), 2);
        assert!(!c.vaults[0].secrets[1].versions[0].enabled);
        assert_eq!(
            c.identities[1].client_id,
            "aaaaaaaa-0000-4000-8000-000000000001"
        );
        assert!(c.identities[1].resource_id.is_some());
        assert_eq!(c.grants[0].permissions.len(), 6);
        assert_eq!(c.faults[0].window, FaultWindow::First(1));
        assert_eq!(c.faults[1].retry_after, RetryAfter::Seconds(1));
        assert_eq!(c.faults[2].status, 307);
        // Secrets never show in Debug output.
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{c:?}").contains("\"pw\""));

        let empty = Config::from_toml("", "empty.toml").expect("valid");
        assert!(empty.vaults.is_empty() && empty.identities.is_empty());
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let cases: &[(&str, &str, &str)] = &[
            ("bogus = 1\n", "1:1", "unknown field `bogus`"),
            (
                "[imds]\nkey_dir = \"/x\"\n",
                "2:11",
                "key_dir belongs in [arc], not [imds]",
            ),
            (
                "[[vault]]\nname = \"ab\"\n",
                "2:8",
                "invalid vault name `ab`",
            ),
            (
                "[[vault]]\nname = \"demo\"\n[[vault]]\nname = \"Demo\"\n",
                "4:8",
                "duplicate vault name `Demo`",
            ),
            (
                "[[vault]]\nname = \"demo\"\n[[vault.secret]]\nname = \"bad_name\"\nvalue = \"x\"\n",
                "4:8",
                "invalid secret name `bad_name`",
            ),
            (
                "[[vault]]\nname = \"demo\"\n[[vault.secret]]\nname = \"s\"\n",
                "4:8",
                "needs a `value`",
            ),
            (
                "[[vault]]\nname = \"demo\"\n[[grant]]\nidentity = \"nobody\"\nvault = \"demo\"\npermissions = [\"get\"]\n",
                "4:12",
                "grant names unknown identity `nobody`",
            ),
            (
                "[[identity]]\nname = \"a\"\nkind = \"system-assigned\"\n[[vault]]\nname = \"demo\"\n[[grant]]\nidentity = \"a\"\nvault = \"other\"\npermissions = [\"get\"]\n",
                "8:9",
                "grant names unknown vault `other`",
            ),
            (
                "[[identity]]\nname = \"a\"\nkind = \"system-assigned\"\n[[vault]]\nname = \"demo\"\n[[grant]]\nidentity = \"a\"\nvault = \"demo\"\npermissions = [\"get\", \"fly\"]\n",
                "9:23",
                "unknown permission `fly`",
            ),
            (
                "[[identity]]\nname = \"a\"\nkind = \"robot\"\n",
                "3:8",
                "unknown variant `robot`",
            ),
            (
                "[[identity]]\nname = \"a\"\nkind = \"system-assigned\"\n[[identity]]\nname = \"b\"\nkind = \"system-assigned\"\n",
                "6:8",
                "only one system-assigned identity",
            ),
            (
                "[[identity]]\nname = \"sp\"\nkind = \"service-principal\"\n",
                "2:8",
                "needs a `secret` or a `certificate`",
            ),
            (
                "[[fault]]\nendpoint = \"moon\"\nstatus = 500\n",
                "2:12",
                "unknown fault endpoint `moon`",
            ),
            (
                "[[fault]]\nendpoint = \"imds\"\n",
                "2:12",
                "needs `status = <code>`",
            ),
            (
                "[[fault]]\nendpoint = \"imds\"\nstatus = 429\nretry_after = \"soon\"\n",
                "4:15",
                "retry_after must be a whole number",
            ),
            ("[[vault]]\nname = \"demo\"\nport = 70000\n", "3:8", ""),
            ("tenant_id = \"a b\"\n", "1:13", "tenant_id must be"),
            (
                "[imds]\nthrottle = { requests = 0, per_seconds = 1 }\n",
                "2:12",
                "throttle needs",
            ),
            ("[[vault]\n", "1:", ""),
            (
                "[[identity]]\nname = \"a\"\nkind = \"user-assigned\"\nclient_id = \"x\"\n[[identity]]\nname = \"b\"\nkind = \"user-assigned\"\nclient_id = \"X\"\n",
                "6:8",
                "reuses client_id `X`",
            ),
            (
                "[[identity]]\nname = \"a\"\nkind = \"user-assigned\"\nsecret = \"s\"\n",
                "2:8",
                "`secret` applies only to service-principal identities",
            ),
            (
                "[[fault]]\nendpoint = \"imds\"\nfirst = 1\nfor_ms = 5\nstatus = 500\n",
                "2:12",
                "`first` or `for_ms`, not both",
            ),
            (
                "[[fault]]\nendpoint = \"imds\"\nstatus = 500\ncontent_length = false\n",
                "2:12",
                "`content_length` applies to `oversized-body` only",
            ),
            (
                "[[fault]]\nendpoint = \"imds\"\naction = \"redirect\"\n",
                "3:10",
                "needs `location`",
            ),
            (
                "[[vault]]\nname = \"demo\"\n[[vault.secret]]\nname = \"s\"\nvalue = \"x\"\n[[vault.secret.version]]\nvalue = \"y\"\n",
                "4:8",
                "both `value` and",
            ),
        ];
        for (text, at, needle) in cases {
            let e = Config::from_toml(text, "cfg.toml").expect_err(text);
            let rendered = e.to_string();
            assert!(
                rendered.starts_with(&format!("cfg.toml:{at}")),
                "{text:?}: got {rendered}"
            );
            assert!(rendered.contains(needle), "{text:?}: got {rendered}");
            assert_eq!(rendered.lines().count(), 1, "{rendered}");
        }
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = Config::load(Path::new("/nonexistent/kvrun-emulator.toml")).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("/nonexistent/kvrun-emulator.toml: cannot read")
        );
    }

    #[test]
    fn host_rules() {
        for (host, ok) in [
            ("demo.vault.azure.net", true),
            ("kv-1.privatelink.vaultcore.azure.net", true),
            ("localhost", false),
            ("demo..vault.azure.net", false),
            ("-demo.vault.azure.net", false),
            ("demo-.vault.azure.net", false),
            ("demo.vault.azure.net:443", false),
            ("https://demo.vault.azure.net", false),
            ("dé.vault.azure.net", false),
        ] {
            assert_eq!(valid_dns_name(host), ok, "{host}");
        }
    }

    #[test]
    fn name_rules() {
        for (name, ok) in [
            ("demo", true),
            ("a-b-c", true),
            ("ab", false),
            ("a--b", false),
            ("1abc", false),
            ("abc-", false),
            ("abcdefghijklmnopqrstuvwxy", false),
        ] {
            assert_eq!(valid_vault_name(name), ok, "{name}");
        }
        for (name, ok) in [
            ("db-password", true),
            ("A1", true),
            ("", false),
            ("a_b", false),
            ("a.b", false),
        ] {
            assert_eq!(valid_secret_name(name), ok, "{name}");
        }
        assert!(valid_version_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_version_id("0123456789ABCDEF0123456789abcdef"));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("a\nbé c", 6), (2, 4));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
