//! Parsing of secret references: the strings that name a Key Vault secret.
//!
//! Accepted forms (doc/reference-syntax.md has the full page):
//! - `NAME` — the default vault, latest version (mapping file and `--secret` only);
//! - `keyvault://VAULT/NAME[/VERSION]`, VAULT a short name or a host with a dot or port;
//! - `https://HOST/secrets/NAME[/VERSION][/]` — the portal's Secret Identifier;
//! - `@Microsoft.KeyVault(SecretUri=https://...)` and
//!   `@Microsoft.KeyVault(VaultName=v;SecretName=n[;SecretVersion=x])` — App Service's syntax.
//!
//! Everything here is pure: no I/O, no environment. References are not secret, so
//! errors quote the input.

use std::fmt;

use reqwest::Url;

use crate::cloud::Cloud;

/// The `https://` origin of one vault, normalised (lower-case host, no default port).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultUrl {
    host: String,
    port: Option<u16>,
}

impl VaultUrl {
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port: the URL's, else HTTPS's 443.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(443)
    }

    /// `https://host[:port]`, the form used in messages, audiences and requests.
    pub fn origin(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("https://{host}:{port}"),
            None => format!("https://{host}"),
        }
    }

    /// Parses what `--vault` and `vault =` accept: a short vault name or an https URL
    /// with nothing after the host but an optional `/`.
    pub fn parse(input: &str, cloud: Cloud) -> Result<Self, RefError> {
        let trimmed = input.trim();
        if has_scheme(trimmed, "http://") {
            return Err(RefError::PlainHttp(input.to_owned()));
        }
        if has_scheme(trimmed, "https://") {
            let url = parse_https(trimmed)?;
            if !matches!(url.path(), "" | "/") {
                return Err(RefError::VaultUrlWithPath(input.to_owned()));
            }
            return Self::from_url(&url, input);
        }
        Self::from_vault_part(trimmed, cloud)
    }

    fn from_url(url: &Url, input: &str) -> Result<Self, RefError> {
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(RefError::BadVault(input.to_owned())),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RefError::BadVault(input.to_owned()));
        }
        Ok(Self {
            host,
            port: url.port(),
        })
    }

    /// The VAULT of `keyvault://VAULT/...` or `VaultName=`: a short name, or a host
    /// when it has a dot or a port.
    fn from_vault_part(vault: &str, cloud: Cloud) -> Result<Self, RefError> {
        if vault.contains(['/', '@', '?', '#']) {
            return Err(RefError::BadVault(vault.to_owned()));
        }
        if vault.contains(['.', ':', '[']) {
            let url = parse_https(&format!("https://{vault}/"))
                .map_err(|_| RefError::BadVault(vault.to_owned()))?;
            return Self::from_url(&url, vault);
        }
        validate_vault_name(vault)?;
        Ok(Self {
            host: format!("{}.{}", vault.to_ascii_lowercase(), cloud.vault_suffix()),
            port: None,
        })
    }
}

impl fmt::Display for VaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

/// A reference after parsing: the vault is absent for a bare `NAME`, which takes the
/// default vault later (config stage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRef {
    pub vault: Option<VaultUrl>,
    pub name: String,
    pub version: Option<String>,
}

/// Where a reference was written; only the mapping sources allow a bare name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `kvrun.toml` or `--secret`.
    Mapping,
    /// A variable of the inherited environment: only explicit markers are references.
    Environment,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error(
        "'{0}' is not a secret reference (expected NAME, keyvault://VAULT/NAME[/VERSION], https://VAULT.vault.azure.net/secrets/NAME[/VERSION] or @Microsoft.KeyVault(...))"
    )]
    Unrecognised(String),
    #[error(
        "'{0}' uses http://: Key Vault references must use https, a token is never sent in clear text"
    )]
    PlainHttp(String),
    #[error("invalid secret name '{0}': 1-127 characters of 0-9, a-z, A-Z and '-'")]
    BadSecretName(String),
    #[error("invalid secret version '{0}': a version is 32 hexadecimal characters")]
    BadVersion(String),
    #[error(
        "invalid vault name '{0}': 3-24 characters of 0-9, a-z, A-Z and single hyphens, starting with a letter"
    )]
    BadVaultName(String),
    #[error("invalid vault '{0}': expected a short vault name, a host name or an https URL")]
    BadVault(String),
    #[error("vault URL '{0}' must not have a path (give https://HOST or https://HOST/)")]
    VaultUrlWithPath(String),
    #[error("'{0}' is not a Key Vault secret URI (expected https://HOST/secrets/NAME[/VERSION])")]
    BadSecretUri(String),
    #[error("'{0}': {1}")]
    BadAppServiceRef(String, &'static str),
}

impl RefError {
    /// What is wrong, without the input: for values from the inherited environment,
    /// which are only presumed to be references and may be secrets themselves.
    pub fn without_input(&self) -> &'static str {
        match self {
            RefError::Unrecognised(_) => {
                "the value starts like a Key Vault reference but is not one"
            }
            RefError::PlainHttp(_) => {
                "the reference uses http://; Key Vault references must use https"
            }
            RefError::BadSecretName(_) => "the reference has an invalid secret name",
            RefError::BadVersion(_) => "the reference has an invalid secret version",
            RefError::BadVaultName(_) => "the reference has an invalid vault name",
            RefError::BadVault(_) | RefError::VaultUrlWithPath(_) => {
                "the reference has an invalid vault"
            }
            RefError::BadSecretUri(_) => "the reference is not a Key Vault secret URI",
            RefError::BadAppServiceRef(_, why) => why,
        }
    }
}

/// Parses one reference. For [`Origin::Environment`] a value that is not an explicit
/// marker is `Ok(None)`: it is an ordinary value and passes through untouched.
pub fn parse(input: &str, origin: Origin, cloud: Cloud) -> Result<Option<ParsedRef>, RefError> {
    if has_scheme(input, "keyvault://") {
        return parse_keyvault_uri(input, cloud).map(Some);
    }
    if let Some(body) = strip_app_service_marker(input) {
        return parse_app_service(input, body, cloud).map(Some);
    }
    if origin == Origin::Environment {
        return Ok(None);
    }
    let trimmed = input.trim();
    if has_scheme(trimmed, "https://") || has_scheme(trimmed, "http://") {
        return parse_secret_uri(trimmed).map(Some);
    }
    if trimmed.contains(['/', ':', '(', ';', '=']) {
        return Err(RefError::Unrecognised(input.to_owned()));
    }
    validate_secret_name(trimmed)?;
    Ok(Some(ParsedRef {
        vault: None,
        name: trimmed.to_owned(),
        version: None,
    }))
}

fn has_scheme(input: &str, scheme: &str) -> bool {
    // `get` is None when the length falls inside a multi-byte character.
    input
        .get(..scheme.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
}

fn parse_https(input: &str) -> Result<Url, RefError> {
    if has_scheme(input, "http://") {
        return Err(RefError::PlainHttp(input.to_owned()));
    }
    let url = Url::parse(input).map_err(|_| RefError::BadVault(input.to_owned()))?;
    if url.scheme() != "https" {
        return Err(RefError::PlainHttp(input.to_owned()));
    }
    Ok(url)
}

fn parse_keyvault_uri(input: &str, cloud: Cloud) -> Result<ParsedRef, RefError> {
    let rest = input["keyvault://".len()..].trim_end_matches('/');
    let mut parts = rest.split('/');
    let (Some(vault), Some(name)) = (parts.next(), parts.next()) else {
        return Err(RefError::Unrecognised(input.to_owned()));
    };
    let version = parts.next();
    if parts.next().is_some() || vault.is_empty() {
        return Err(RefError::Unrecognised(input.to_owned()));
    }
    let vault = VaultUrl::from_vault_part(vault, cloud)?;
    secret_ref(Some(vault), name, version)
}

/// `https://HOST/secrets/NAME[/VERSION][/]`.
fn parse_secret_uri(input: &str) -> Result<ParsedRef, RefError> {
    let url = parse_https(input)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(RefError::BadSecretUri(input.to_owned()));
    }
    let vault = VaultUrl::from_url(&url, input)?;
    let path = url.path().trim_start_matches('/');
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut segments = path.split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(kind), Some(name), version, None) if kind.eq_ignore_ascii_case("secrets") => {
            secret_ref(Some(vault), name, version)
        }
        _ => Err(RefError::BadSecretUri(input.to_owned())),
    }
}

/// The text between `@Microsoft.KeyVault(` and the final `)`.
fn strip_app_service_marker(input: &str) -> Option<&str> {
    const MARKER: &str = "@Microsoft.KeyVault(";
    let trimmed = input.trim();
    if has_scheme(trimmed, MARKER) {
        Some(trimmed[MARKER.len()..].strip_suffix(')').unwrap_or("\u{0}"))
    } else {
        None
    }
}

fn parse_app_service(input: &str, body: &str, cloud: Cloud) -> Result<ParsedRef, RefError> {
    let bad = |why| RefError::BadAppServiceRef(input.to_owned(), why);
    if body.contains('\u{0}') {
        return Err(bad("missing the closing ')'"));
    }
    let (mut uri, mut vault, mut name, mut version) = (None, None, None, None);
    for pair in body.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("expected Key=Value pairs"))?;
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "secreturi" => &mut uri,
            "vaultname" => &mut vault,
            "secretname" => &mut name,
            "secretversion" => &mut version,
            _ => {
                return Err(bad(
                    "unknown key (expected SecretUri, or VaultName, SecretName and optional SecretVersion)",
                ));
            }
        };
        if slot.replace(value.trim()).is_some() {
            return Err(bad("a key is given twice"));
        }
    }
    match (uri, vault, name, version) {
        (Some(uri), None, None, None) => parse_secret_uri(uri),
        (None, Some(vault), Some(name), version) => {
            let vault = VaultUrl::from_vault_part(vault, cloud)?;
            secret_ref(Some(vault), name, version.filter(|v| !v.is_empty()))
        }
        (Some(_), ..) => Err(bad(
            "SecretUri cannot be combined with VaultName, SecretName or SecretVersion",
        )),
        _ => Err(bad("needs SecretUri, or both VaultName and SecretName")),
    }
}

fn secret_ref(
    vault: Option<VaultUrl>,
    name: &str,
    version: Option<&str>,
) -> Result<ParsedRef, RefError> {
    validate_secret_name(name)?;
    let version = match version {
        None | Some("") => None,
        Some(v) => {
            validate_version(v)?;
            Some(v.to_ascii_lowercase())
        }
    };
    Ok(ParsedRef {
        vault,
        name: name.to_owned(),
        version,
    })
}

pub fn validate_secret_name(name: &str) -> Result<(), RefError> {
    let ok = (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RefError::BadSecretName(name.to_owned()))
    }
}

fn validate_version(version: &str) -> Result<(), RefError> {
    if version.len() == 32 && version.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(RefError::BadVersion(version.to_owned()))
    }
}

fn validate_vault_name(name: &str) -> Result<(), RefError> {
    let bytes = name.as_bytes();
    let ok = (3..=24).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(RefError::BadVaultName(name.to_owned()))
    }
}

/// A variable name the child's environment can carry: POSIX portable names
/// (letters, digits, underscore, not starting with a digit).
pub fn validate_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "0123456789abcdef0123456789abcdef";

    fn ok(
        vault: Option<&str>,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<ParsedRef>, RefError> {
        let vault = vault.map(|v| VaultUrl::parse(v, Cloud::Public).unwrap());
        Ok(Some(ParsedRef {
            vault,
            name: name.into(),
            version: version.map(Into::into),
        }))
    }

    #[test]
    fn mapping_references() {
        let cases: Vec<(String, Result<Option<ParsedRef>, RefError>)> = vec![
            ("db-password".to_owned(), ok(None, "db-password", None)),
            (
                "  sqlAzure--AdminPassword ".to_owned(),
                ok(None, "sqlAzure--AdminPassword", None),
            ),
            (
                "keyvault://myvault/db".to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                "keyvault://myvault/db/".to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                format!("keyvault://myvault/db/{V}"),
                ok(Some("https://myvault.vault.azure.net"), "db", Some(V)),
            ),
            (
                "KEYVAULT://MyVault/db".to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                "keyvault://v.vault.azure.cn/db".to_owned(),
                ok(Some("https://v.vault.azure.cn"), "db", None),
            ),
            (
                "keyvault://127.0.0.1:8443/db".to_owned(),
                ok(Some("https://127.0.0.1:8443"), "db", None),
            ),
            (
                "keyvault://[::1]:8443/db".to_owned(),
                ok(Some("https://[::1]:8443"), "db", None),
            ),
            (
                "https://myvault.vault.azure.net/secrets/db".to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                "https://myvault.vault.azure.net/secrets/db/".to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                "https://myvault.vault.azure.net:443/secrets/db".to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                format!(
                    "https://MYVAULT.vault.azure.net/secrets/db/{}",
                    V.to_uppercase()
                ),
                ok(Some("https://myvault.vault.azure.net"), "db", Some(V)),
            ),
            (
                "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db/)"
                    .to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db)"
                    .to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                format!(
                    "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db/{V})"
                ),
                ok(Some("https://myvault.vault.azure.net"), "db", Some(V)),
            ),
            (
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=db)".to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
            (
                format!(
                    "@microsoft.keyvault( vaultname = myvault ; secretname=db; SecretVersion={V} ;)"
                ),
                ok(Some("https://myvault.vault.azure.net"), "db", Some(V)),
            ),
            (
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=db;SecretVersion=)".to_owned(),
                ok(Some("https://myvault.vault.azure.net"), "db", None),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse(&input, Origin::Mapping, Cloud::Public),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn rejected_references() {
        for (input, expected) in [
            ("", "BadSecretName"),
            ("bad_name", "BadSecretName"),
            (&"x".repeat(128), "BadSecretName"),
            ("a/b", "Unrecognised"),
            ("keyvault://myvault", "Unrecognised"),
            ("keyvault:///db", "Unrecognised"),
            ("keyvault://myvault/db/v1/extra", "Unrecognised"),
            ("keyvault://myvault/db/not-a-version", "BadVersion"),
            ("keyvault://ab/db", "BadVaultName"),
            ("keyvault://my_vault/db", "BadVaultName"),
            ("keyvault://my--vault/db", "BadVaultName"),
            ("keyvault://-myvault/db", "BadVaultName"),
            ("keyvault://1vault/db", "BadVaultName"),
            ("keyvault://myvault/bad.name", "BadSecretName"),
            ("http://myvault.vault.azure.net/secrets/db", "PlainHttp"),
            ("https://myvault.vault.azure.net/keys/db", "BadSecretUri"),
            ("https://myvault.vault.azure.net/secrets", "BadSecretUri"),
            (
                "https://myvault.vault.azure.net/secrets/db?x=1",
                "BadSecretUri",
            ),
            (
                "https://user@myvault.vault.azure.net/secrets/db",
                "BadVault",
            ),
            (
                "@Microsoft.KeyVault(SecretUri=http://myvault.vault.azure.net/secrets/db)",
                "PlainHttp",
            ),
            ("@Microsoft.KeyVault(VaultName=myvault)", "BadAppServiceRef"),
            (
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=db",
                "BadAppServiceRef",
            ),
            (
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=db;Foo=1)",
                "BadAppServiceRef",
            ),
            (
                "@Microsoft.KeyVault(VaultName=a;VaultName=b;SecretName=db)",
                "BadAppServiceRef",
            ),
            (
                "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/db;SecretName=db)",
                "BadAppServiceRef",
            ),
            ("@Microsoft.KeyVault(nonsense)", "BadAppServiceRef"),
        ] {
            let err = parse(input, Origin::Mapping, Cloud::Public).expect_err(input);
            assert!(format!("{err:?}").starts_with(expected), "{input}: {err:?}");
        }
    }

    /// Found by the `reference` fuzz target: a prefix test sliced inside a
    /// multi-byte character and panicked.
    #[test]
    fn non_ascii_input_near_a_prefix_does_not_panic() {
        for input in [
            "   .[\u{6b6}",
            "http:/\u{e9}",
            "keyvault:/\u{e9}x",
            "@Microsoft.KeyVaul\u{e9}(x)",
            "\u{1f600}",
        ] {
            for origin in [Origin::Mapping, Origin::Environment] {
                let _ = parse(input, origin, Cloud::Public);
            }
            let _ = VaultUrl::parse(input, Cloud::Public);
        }
    }

    #[test]
    fn environment_values_need_a_marker() {
        for plain in [
            "db-password",
            "https://example.com/secrets/x",
            "hello world",
            "",
        ] {
            assert_eq!(
                parse(plain, Origin::Environment, Cloud::Public),
                Ok(None),
                "{plain}"
            );
        }
        assert!(
            parse("keyvault://myvault/db", Origin::Environment, Cloud::Public)
                .unwrap()
                .is_some()
        );
        assert!(
            parse(
                "keyvault://bad_vault/db",
                Origin::Environment,
                Cloud::Public
            )
            .is_err()
        );
    }

    #[test]
    fn cloud_suffix_applies_to_short_names() {
        let parsed = parse("keyvault://myvault/db", Origin::Mapping, Cloud::China)
            .unwrap()
            .unwrap();
        assert_eq!(
            parsed.vault.unwrap().origin(),
            "https://myvault.vault.azure.cn"
        );
    }

    #[test]
    fn vault_option_forms() {
        for (input, expected) in [
            ("myvault", Ok("https://myvault.vault.azure.net")),
            (
                "https://myvault.vault.azure.net",
                Ok("https://myvault.vault.azure.net"),
            ),
            (
                "https://myvault.vault.azure.net/",
                Ok("https://myvault.vault.azure.net"),
            ),
            ("https://127.0.0.1:8443", Ok("https://127.0.0.1:8443")),
            ("http://127.0.0.1:8443", Err("PlainHttp")),
            (
                "https://myvault.vault.azure.net/secrets",
                Err("VaultUrlWithPath"),
            ),
            ("my vault", Err("BadVaultName")),
        ] {
            let got = VaultUrl::parse(input, Cloud::Public);
            match expected {
                Ok(origin) => assert_eq!(got.unwrap().origin(), origin, "{input}"),
                Err(kind) => assert!(
                    format!("{:?}", got.unwrap_err()).starts_with(kind),
                    "{input}"
                ),
            }
        }
    }

    #[test]
    fn env_var_names() {
        for (name, valid) in [
            ("DB_PASSWORD", true),
            ("_x", true),
            ("a1", true),
            ("1a", false),
            ("A-B", false),
            ("", false),
            ("A=B", false),
            ("É", false),
        ] {
            assert_eq!(validate_env_var_name(name), valid, "{name}");
        }
    }
}
