//! Builds the plan: which variable gets which secret, merged from the three sources
//! the contract names, validated before any network call.
//!
//! Precedence when a variable is named twice: `--secret` over the mapping file over
//! a reference in the inherited environment. A variable named twice in one source is
//! an error. Every problem found is reported, not just the first.

pub mod file;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::cli::Options;
use crate::cloud::Cloud;
use crate::reference::{self, Origin, ParsedRef, RefError, VaultUrl};

/// One secret in one vault, the unit that is fetched (once, however many variables
/// name it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretId {
    pub vault: VaultUrl,
    pub name: String,
    pub version: Option<String>,
}

/// Where a binding was declared; shown in logs and `kvrun check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Flag,
    Environment,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::File => "mapping file",
            Source::Flag => "--secret",
            Source::Environment => "environment reference",
        })
    }
}

/// Variable -> secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub var: String,
    pub secret: SecretId,
    pub optional: bool,
    pub source: Source,
}

/// The validated mapping, sorted by variable name.
#[derive(Debug, Default)]
pub struct Plan {
    pub bindings: Vec<Binding>,
    pub cloud: Cloud,
    pub file: Option<PathBuf>,
}

impl Plan {
    /// Each distinct secret once, in a stable order.
    pub fn distinct_secrets(&self) -> Vec<SecretId> {
        let mut ids: Vec<SecretId> = self.bindings.iter().map(|b| b.secret.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Everything wrong with the configuration, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// Builds the plan from the options, the inherited environment and the working
/// directory (for `kvrun.toml` discovery). Reads the mapping file; nothing else.
pub fn build_plan(
    options: &Options,
    env: &[(OsString, OsString)],
    cwd: &Path,
) -> Result<Plan, ConfigError> {
    let mapping_file = match &options.config {
        Some(path) => Some(file::load(path).map_err(|e| ConfigError::one(e.to_string()))?),
        None => match file::discover(cwd) {
            Some(path) => Some(file::load(&path).map_err(|e| ConfigError::one(e.to_string()))?),
            None => None,
        },
    };
    let mut problems = Vec::new();

    let cloud = match (
        options.cloud,
        mapping_file.as_ref().and_then(|f| f.cloud.as_ref()),
    ) {
        (Some(cloud), _) => cloud,
        (None, Some(located)) => located.value.parse().unwrap_or_else(|e: String| {
            problems.push(at(mapping_file.as_ref(), located.line, located.column, &e));
            Cloud::Public
        }),
        (None, None) => Cloud::Public,
    };

    let default_vault = match (
        &options.vault,
        mapping_file.as_ref().and_then(|f| f.vault.as_ref()),
    ) {
        (Some(vault), _) => VaultUrl::parse(vault, cloud).map(Some).unwrap_or_else(|e| {
            problems.push(format!("--vault / KVRUN_VAULT: {e}"));
            None
        }),
        (None, Some(located)) => VaultUrl::parse(&located.value, cloud)
            .map(Some)
            .unwrap_or_else(|e| {
                problems.push(at(
                    mapping_file.as_ref(),
                    located.line,
                    located.column,
                    &format!("vault: {e}"),
                ));
                None
            }),
        (None, None) => None,
    };

    let resolve_vault = |parsed: ParsedRef| -> Result<SecretId, String> {
        let vault = parsed.vault.or_else(|| default_vault.clone()).ok_or_else(|| {
            format!(
                "'{}' names no vault and there is no default vault: set `vault = ...` in the mapping file, --vault or KVRUN_VAULT, or use keyvault://VAULT/{}",
                parsed.name, parsed.name
            )
        })?;
        Ok(SecretId {
            vault,
            name: parsed.name,
            version: parsed.version,
        })
    };

    let mut merged: BTreeMap<String, Binding> = BTreeMap::new();

    // Lowest precedence first: inherited environment references.
    for (name, value) in env {
        let (Some(var), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        match reference::parse(value, Origin::Environment, cloud) {
            Ok(None) => {}
            Ok(Some(parsed)) => match resolve_vault(parsed) {
                Ok(secret) => {
                    merged.insert(
                        var.to_owned(),
                        Binding {
                            var: var.to_owned(),
                            secret,
                            optional: false,
                            source: Source::Environment,
                        },
                    );
                }
                Err(e) => problems.push(format!("environment variable {var}: {e}")),
            },
            // The value is not quoted: it is only presumed to be a reference.
            Err(e) => problems.push(format!("environment variable {var}: {}", e.without_input())),
        }
    }

    if let Some(mapping) = &mapping_file {
        for entry in &mapping.entries {
            let var = &entry.var.value;
            let problem = |e: &dyn fmt::Display| {
                at(
                    Some(mapping),
                    entry.reference.line,
                    entry.reference.column,
                    &format!("{var}: {e}"),
                )
            };
            if !reference::validate_env_var_name(var) {
                problems.push(at(
                    Some(mapping),
                    entry.var.line,
                    entry.var.column,
                    &bad_var_name(var),
                ));
                continue;
            }
            match file_entry_secret(entry, cloud, &resolve_vault) {
                Ok(secret) => {
                    merged.insert(
                        var.clone(),
                        Binding {
                            var: var.clone(),
                            secret,
                            optional: entry.optional,
                            source: Source::File,
                        },
                    );
                }
                Err(e) => problems.push(problem(&e)),
            }
        }
    }

    let mut from_flags: BTreeMap<&str, ()> = BTreeMap::new();
    for arg in &options.secrets {
        let Some((var, reference)) = arg.split_once('=') else {
            problems.push(format!("--secret '{arg}': expected VAR=REF, for example DB_PASSWORD=keyvault://myvault/db-password"));
            continue;
        };
        if !reference::validate_env_var_name(var) {
            problems.push(format!("--secret '{arg}': {}", bad_var_name(var)));
            continue;
        }
        if from_flags.insert(var, ()).is_some() {
            problems.push(format!("--secret: {var} is mapped twice"));
            continue;
        }
        match reference::parse(reference, Origin::Mapping, cloud)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                let parsed =
                    p.ok_or_else(|| RefError::Unrecognised(reference.to_owned()).to_string())?;
                resolve_vault(parsed)
            }) {
            Ok(secret) => {
                merged.insert(
                    var.to_owned(),
                    Binding {
                        var: var.to_owned(),
                        secret,
                        optional: false,
                        source: Source::Flag,
                    },
                );
            }
            Err(e) => problems.push(format!("--secret {var}: {e}")),
        }
    }

    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Plan {
        bindings: merged.into_values().collect(),
        cloud,
        file: mapping_file.map(|f| f.path),
    })
}

fn file_entry_secret(
    entry: &file::FileEntry,
    cloud: Cloud,
    resolve_vault: &dyn Fn(ParsedRef) -> Result<SecretId, String>,
) -> Result<SecretId, String> {
    let mut parsed = reference::parse(&entry.reference.value, Origin::Mapping, cloud)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| RefError::Unrecognised(entry.reference.value.clone()).to_string())?;
    if entry.vault.is_some() || entry.version.is_some() {
        if parsed.vault.is_some() || parsed.version.is_some() {
            return Err(
                "'secret' must be a bare name when 'vault' or 'version' is given".to_owned(),
            );
        }
        if let Some(vault) = &entry.vault {
            parsed.vault = Some(VaultUrl::parse(&vault.value, cloud).map_err(|e| e.to_string())?);
        }
        if let Some(version) = &entry.version {
            let probe = format!("keyvault://probe/{}/{}", parsed.name, version.value);
            parsed.version = reference::parse(&probe, Origin::Mapping, cloud)
                .map_err(|e| e.to_string())?
                .and_then(|p| p.version);
        }
    }
    resolve_vault(parsed)
}

fn bad_var_name(var: &str) -> String {
    format!(
        "'{var}' is not a valid environment variable name (letters, digits and '_', not starting with a digit)"
    )
}

fn at(file: Option<&file::MappingFile>, line: usize, column: usize, message: &str) -> String {
    match file {
        Some(f) => format!("{}:{line}:{column}: {message}", f.path.display()),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn options(args: &[&str]) -> Options {
        crate::cli::Cli::try_parse_from(
            std::iter::once("kvrun")
                .chain(args.iter().copied())
                .chain(["--", "true"]),
        )
        .unwrap()
        .options
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn plan_with_file(
        contents: &str,
        args: &[&str],
        environment: &[(&str, &str)],
    ) -> Result<Plan, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "kvrun-config-test-{}-{}",
            std::process::id(),
            contents.len() + args.len() * 1000 + environment.len() * 7
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kvrun.toml"), contents).unwrap();
        let nested = dir.join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        let result = build_plan(&options(args), &env(environment), &nested);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    fn summary(plan: &Plan) -> Vec<String> {
        plan.bindings
            .iter()
            .map(|b| {
                format!(
                    "{}={}/{}{} [{}{}]",
                    b.var,
                    b.secret.vault,
                    b.secret.name,
                    b.secret
                        .version
                        .as_deref()
                        .map(|v| format!("@{v}"))
                        .unwrap_or_default(),
                    b.source,
                    if b.optional { ", optional" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn merges_with_the_contract_precedence() {
        let plan = plan_with_file(
            "vault = \"filevault\"\n[env]\nA = \"from-file\"\nB = \"from-file\"\nC = { secret = \"c\", optional = true }\n",
            &["-s", "A=keyvault://flagvault/from-flag"],
            &[("A", "keyvault://envvault/x"), ("B", "keyvault://envvault/x"), ("D", "@Microsoft.KeyVault(VaultName=envvault;SecretName=d)"), ("PLAIN", "keep")],
        )
        .unwrap();
        assert_eq!(
            summary(&plan),
            [
                "A=https://flagvault.vault.azure.net/from-flag [--secret]",
                "B=https://filevault.vault.azure.net/from-file [mapping file]",
                "C=https://filevault.vault.azure.net/c [mapping file, optional]",
                "D=https://envvault.vault.azure.net/d [environment reference]",
            ]
        );
    }

    #[test]
    fn vault_flag_overrides_file_vault_and_cloud_applies() {
        let plan = plan_with_file(
            "vault = \"filevault\"\ncloud = \"china\"\n[env]\nA = \"a\"\n",
            &["--vault", "flagvault"],
            &[],
        )
        .unwrap();
        assert_eq!(
            summary(&plan),
            ["A=https://flagvault.vault.azure.cn/a [mapping file]"]
        );
    }

    #[test]
    fn table_entries_take_vault_and_version() {
        let plan = plan_with_file(
            "[env]\nA = { secret = \"a\", vault = \"https://127.0.0.1:8443\", version = \"0123456789ABCDEF0123456789abcdef\" }\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            summary(&plan),
            ["A=https://127.0.0.1:8443/a@0123456789abcdef0123456789abcdef [mapping file]"]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let err = plan_with_file(
            "[env]\n1BAD = \"x\"\nBOTH = { secret = \"keyvault://vault1/x\", vault = \"vault2\" }\nNOVAULT = \"x\"\nURI = \"http://v.vault.azure.net/secrets/x\"\n",
            &["-s", "NOEQUALS", "-s", "X=keyvault://vault1/a", "-s", "X=keyvault://vault1/b"],
            &[("E", "keyvault://bad_vault/x")],
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "environment variable E: the reference has an invalid vault name",
            "kvrun.toml:2:1: '1BAD' is not a valid environment variable name",
            "kvrun.toml:4:11: NOVAULT: 'x' names no vault",
            "kvrun.toml:5:7: URI: 'http://v.vault.azure.net/secrets/x' uses http://",
            "BOTH: 'secret' must be a bare name",
            "--secret 'NOEQUALS': expected VAR=REF",
            "--secret: X is mapped twice",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(err.problems.len(), 7, "{text}");
    }

    #[test]
    fn explicit_missing_config_is_an_error() {
        let err = build_plan(
            &options(&["--config", "/nonexistent/kvrun.toml"]),
            &[],
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kvrun.toml"), "{err}");
    }

    #[test]
    fn distinct_secrets_are_deduplicated() {
        let plan = build_plan(
            &options(&[
                "-s",
                "A=keyvault://vault1/x",
                "-s",
                "B=keyvault://VAULT1/x",
                "-s",
                "C=keyvault://vault1/y",
            ]),
            &[],
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(plan.distinct_secrets().len(), 2);
    }
}
