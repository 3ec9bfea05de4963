//! Azure clouds: the vault DNS suffix of each, the token audience that goes with it,
//! the Entra ID authority host, and the rule that decides whether a vault's 401
//! challenge may choose the audience of a token.
//!
//! The rule matters because the audience decides which service a token opens: a vault
//! (or something pretending to be one) that could name any audience could collect a
//! token for another service. Known clouds therefore never ask; an unknown host (an
//! emulator, a private endpoint alias) may only name itself or a parent domain of
//! itself, label by label.

use std::fmt;
use std::str::FromStr;

/// An Azure cloud, chosen with `--cloud` / `KVRUN_CLOUD` or `cloud =` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cloud {
    #[default]
    Public,
    China,
    UsGovernment,
    /// Microsoft Cloud Germany closed in 2021; kept so old hosts keep their audience.
    Germany,
}

/// Vault host suffix -> Key Vault token audience, for every cloud.
const KNOWN_VAULT_SUFFIXES: &[(&str, &str)] = &[
    ("vault.azure.net", "https://vault.azure.net"),
    ("vault.azure.cn", "https://vault.azure.cn"),
    ("vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"),
    ("vault.microsoftazure.de", "https://vault.microsoftazure.de"),
];

impl Cloud {
    pub const NAMES: &'static [&'static str] = &["public", "china", "usgov", "germany"];

    /// DNS suffix appended to short vault names (`myvault` -> `myvault.<suffix>`).
    pub fn vault_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "vault.azure.net",
            Cloud::China => "vault.azure.cn",
            Cloud::UsGovernment => "vault.usgovcloudapi.net",
            Cloud::Germany => "vault.microsoftazure.de",
        }
    }

    /// Entra ID authority host used when `AZURE_AUTHORITY_HOST` is not set.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::China => "https://login.chinacloudapi.cn",
            Cloud::UsGovernment => "https://login.microsoftonline.us",
            Cloud::Germany => "https://login.microsoftonline.de",
        }
    }
}

impl FromStr for Cloud {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "public" | "azurecloud" | "azurepubliccloud" => Ok(Cloud::Public),
            "china" | "azurechinacloud" => Ok(Cloud::China),
            "usgov" | "usgovernment" | "azureusgovernment" => Ok(Cloud::UsGovernment),
            "germany" | "azuregermancloud" => Ok(Cloud::Germany),
            _ => Err(format!(
                "unknown cloud '{s}' (expected one of: {})",
                Cloud::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Public => "public",
            Cloud::China => "china",
            Cloud::UsGovernment => "usgov",
            Cloud::Germany => "germany",
        })
    }
}

/// The Key Vault audience for a vault host in a known cloud, or `None` for a host that
/// must be asked (through its 401 challenge).
pub fn known_audience(vault_host: &str) -> Option<&'static str> {
    KNOWN_VAULT_SUFFIXES
        .iter()
        .find(|(suffix, _)| is_strict_subdomain(vault_host, suffix))
        .map(|(_, audience)| *audience)
}

/// Whether a challenge naming `resource_host` may set the audience for a vault at
/// `vault_host`: the same host, or a parent domain of it, compared label by label and
/// case-insensitively (`vault.azure.net` covers `v.vault.azure.net`; `emu.test` does
/// not cover `x.kvrun-emu.test`).
pub fn challenge_host_allowed(vault_host: &str, resource_host: &str) -> bool {
    let vault = vault_host.trim_end_matches('.');
    let resource = resource_host.trim_end_matches('.');
    !resource.is_empty()
        && (vault.eq_ignore_ascii_case(resource) || is_strict_subdomain(vault, resource))
}

/// `host` is `parent` with one or more labels in front.
fn is_strict_subdomain(host: &str, parent: &str) -> bool {
    let (host, parent) = (host.as_bytes(), parent.as_bytes());
    host.len() > parent.len() + 1
        && host[host.len() - parent.len()..].eq_ignore_ascii_case(parent)
        && host[host.len() - parent.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_audiences() {
        for (host, expected) in [
            ("myvault.vault.azure.net", Some("https://vault.azure.net")),
            ("MyVault.Vault.Azure.NET", Some("https://vault.azure.net")),
            ("v.vault.azure.cn", Some("https://vault.azure.cn")),
            (
                "v.vault.usgovcloudapi.net",
                Some("https://vault.usgovcloudapi.net"),
            ),
            (
                "v.vault.microsoftazure.de",
                Some("https://vault.microsoftazure.de"),
            ),
            ("vault.azure.net", None),
            ("evilvault.azure.net", None),
            ("myvault.vault.azure.net.evil.test", None),
            ("127.0.0.1", None),
        ] {
            assert_eq!(known_audience(host), expected, "{host}");
        }
    }

    #[test]
    fn challenge_host_rule() {
        for (vault, resource, allowed) in [
            ("127.0.0.1", "127.0.0.1", true),
            ("v.vault.azure.net", "vault.azure.net", true),
            ("v.vault.azure.net", "VAULT.AZURE.NET", true),
            ("x.emu.test", "emu.test", true),
            ("x.kvrun-emu.test", "emu.test", false),
            ("emu.test", "x.emu.test", false),
            ("v.vault.azure.net", "management.azure.com", false),
            ("127.0.0.1", "127.0.0.2", false),
            ("127.0.0.1", "", false),
            ("localhost", "evil.localhost", false),
        ] {
            assert_eq!(
                challenge_host_allowed(vault, resource),
                allowed,
                "{vault} <- {resource}"
            );
        }
    }

    #[test]
    fn cloud_names_round_trip() {
        for name in Cloud::NAMES {
            let cloud: Cloud = name.parse().unwrap();
            assert_eq!(cloud.to_string(), *name);
        }
        assert!("mars".parse::<Cloud>().is_err());
    }
}
