//! The command line: flags, their `KVRUN_*` environment equivalents and the help text.
//! Only shape is checked here; meaning is checked when the plan is built (config).

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::FalseyValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cloud::Cloud;

const AFTER_HELP: &str = "\
Examples:
  kvrun -- npm install                          mapping from ./kvrun.toml (or an ancestor's)
  kvrun --config /etc/kvrun/app.toml -- /usr/bin/app
  kvrun -s DB_PASSWORD=keyvault://myvault/db-password -- ./server
  DB_PASSWORD=@Microsoft.KeyVault(VaultName=myvault;SecretName=db) kvrun -- ./server
  kvrun check                                   show what would be resolved, never values

Exit status: the command's own once it runs; 125 when kvrun fails (usage, config,
identity, vault); 126 when the command cannot be executed; 127 when it is not found.
Docs: https://github.com/kvrun/kvrun#readme";

/// Run a command with Azure Key Vault secrets in its environment.
///
/// kvrun reads a mapping of environment variables to Key Vault secrets, gets a token
/// through the identity the machine already has, fetches every secret concurrently,
/// and then replaces itself with COMMAND (same PID). It never starts COMMAND with a
/// partial set of secrets, and never prints a secret or a token.
#[derive(Debug, Parser)]
#[command(name = "kvrun", version, after_help = AFTER_HELP, subcommand_precedence_over_arg = true)]
pub struct Cli {
    #[command(subcommand)]
    pub subcommand: Option<Command>,

    #[command(flatten)]
    pub options: Options,

    /// The command to run, with its arguments (after `--`).
    #[arg(value_name = "COMMAND", trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve every mapped secret and print a table (VAR, VAULT, SECRET, VERSION,
    /// STATUS) without values; exit 0 only when all resolve.
    Check,
}

#[derive(Debug, Args)]
pub struct Options {
    /// Mapping file (default: kvrun.toml in the current directory or the nearest ancestor).
    #[arg(
        short = 'c',
        long,
        env = "KVRUN_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub config: Option<PathBuf>,

    /// Map VAR to a secret reference (repeatable; in KVRUN_SECRET, comma-separated).
    #[arg(
        short = 's',
        long = "secret",
        env = "KVRUN_SECRET",
        value_name = "VAR=REF",
        value_delimiter = ',',
        global = true
    )]
    pub secrets: Vec<String>,

    /// Default vault for bare secret names: a short name or an https URL.
    #[arg(long, env = "KVRUN_VAULT", value_name = "VAULT", global = true)]
    pub vault: Option<String>,

    /// Azure cloud of short vault names [public, china, usgov, germany].
    #[arg(long, env = "KVRUN_CLOUD", value_name = "CLOUD", global = true)]
    pub cloud: Option<Cloud>,

    /// Credential source to use instead of detecting one.
    #[arg(long, env = "KVRUN_CREDENTIAL", value_enum, default_value_t = CredentialKind::Auto, global = true)]
    pub credential: CredentialKind,

    /// Client id of a user-assigned managed identity (default: AZURE_CLIENT_ID).
    #[arg(
        long,
        env = "KVRUN_CLIENT_ID",
        value_name = "ID",
        global = true,
        group = "user_assigned"
    )]
    pub client_id: Option<String>,

    /// Object (principal) id of a user-assigned managed identity.
    #[arg(
        long,
        env = "KVRUN_OBJECT_ID",
        value_name = "ID",
        global = true,
        group = "user_assigned"
    )]
    pub object_id: Option<String>,

    /// ARM resource id of a user-assigned managed identity.
    #[arg(
        long,
        env = "KVRUN_RESOURCE_ID",
        value_name = "ID",
        global = true,
        group = "user_assigned"
    )]
    pub resource_id: Option<String>,

    /// Connect to ADDR for HOST instead of asking DNS (Entra ID and Key Vault only;
    /// certificates are still checked against HOST). Repeatable; in KVRUN_RESOLVE,
    /// comma-separated. For private endpoints before DNS is in place, and emulators.
    #[arg(long, env = "KVRUN_RESOLVE", value_name = "HOST=ADDR", value_delimiter = ',', value_parser = parse_resolve, global = true)]
    pub resolve: Vec<Resolve>,

    /// Bound on the whole resolution, retries included.
    #[arg(long, env = "KVRUN_TIMEOUT", value_name = "SECONDS", default_value = "60", value_parser = parse_timeout, global = true)]
    pub timeout: Duration,

    /// More logging on stderr (-v info, -vv debug, -vvv trace). Names, never values.
    #[arg(short = 'v', long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log level [error, warn, info, debug, trace]; overrides -v.
    #[arg(
        long,
        env = "KVRUN_LOG",
        value_name = "LEVEL",
        value_enum,
        global = true
    )]
    pub log_level: Option<crate::log::Level>,

    /// Log format on stderr.
    #[arg(long, env = "KVRUN_LOG_FORMAT", value_enum, default_value_t = crate::log::Format::Text, global = true)]
    pub log_format: crate::log::Format,

    /// Print where the time went (identity, each vault, exec) on stderr.
    #[arg(long, env = "KVRUN_TIMINGS", value_parser = FalseyValueParser::new(), default_value = "false", num_args = 0, default_missing_value = "true", global = true)]
    pub timings: bool,
}

/// `--credential` values (the contract's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CredentialKind {
    /// Detect, in the documented order.
    Auto,
    /// Service principal from AZURE_* variables, or AzureServicesAuthConnectionString.
    Environment,
    /// AKS workload identity (AZURE_FEDERATED_TOKEN_FILE).
    WorkloadIdentity,
    /// The platform's managed identity (App Service, Arc, Cloud Shell, Service Fabric, Azure ML, IMDS).
    ManagedIdentity,
    /// `az account get-access-token` from a signed-in Azure CLI.
    AzureCli,
}

/// One `--resolve` entry: a host name and the address to use for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    pub host: String,
    pub addr: IpAddr,
}

fn parse_resolve(value: &str) -> Result<Resolve, String> {
    let (host, addr) = value
        .trim()
        .split_once('=')
        .ok_or_else(|| format!("'{value}' is not HOST=ADDR"))?;
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if !host_ok {
        return Err(format!("'{host}' is not a DNS host name"));
    }
    let addr = addr
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("'{}' is not an IP address", addr.trim()))?;
    Ok(Resolve { host, addr })
}

fn parse_timeout(value: &str) -> Result<Duration, String> {
    let seconds: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("'{value}' is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!(
            "'{value}' must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kvrun").chain(args.iter().copied()))
    }

    #[test]
    fn resolve_entries() {
        let v4 = "127.0.0.1".parse::<IpAddr>().unwrap();
        let v6 = "::1".parse::<IpAddr>().unwrap();
        let cases: &[(&str, Option<(&str, IpAddr)>)] = &[
            (
                "demo.vault.azure.net=127.0.0.1",
                Some(("demo.vault.azure.net", v4)),
            ),
            (
                " Demo.Vault.Azure.NET. = 127.0.0.1 ",
                Some(("demo.vault.azure.net", v4)),
            ),
            (
                "demo.vault.azure.net=[::1]",
                Some(("demo.vault.azure.net", v6)),
            ),
            ("localhost=::1", Some(("localhost", v6))),
            ("demo.vault.azure.net", None),
            ("=127.0.0.1", None),
            ("demo.vault.azure.net=", None),
            ("demo.vault.azure.net=example.com", None),
            ("demo..azure.net=127.0.0.1", None),
            ("https://demo.vault.azure.net=127.0.0.1", None),
            ("demo.vault.azure.net:443=127.0.0.1", None),
        ];
        for (input, want) in cases {
            let got = parse_resolve(input).ok();
            let want = want.map(|(host, addr)| Resolve {
                host: host.to_owned(),
                addr,
            });
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn command_after_double_dash_keeps_its_flags() {
        let cli = parse(&["-s", "A=x", "--", "node", "-e", "1", "--secret"]).unwrap();
        assert!(cli.subcommand.is_none());
        assert_eq!(cli.command, ["node", "-e", "1", "--secret"]);
        assert_eq!(cli.options.secrets, ["A=x"]);
    }

    #[test]
    fn command_without_double_dash() {
        let cli = parse(&["--timeout", "5", "env", "-i"]).unwrap();
        assert_eq!(cli.command, ["env", "-i"]);
        assert_eq!(cli.options.timeout, Duration::from_secs(5));
    }

    #[test]
    fn check_subcommand_and_escaped_program_named_check() {
        let cli = parse(&["check", "--vault", "v1"]).unwrap();
        assert!(matches!(cli.subcommand, Some(Command::Check)));
        assert_eq!(cli.options.vault.as_deref(), Some("v1"));
        let cli = parse(&["--", "check"]).unwrap();
        assert!(cli.subcommand.is_none());
        assert_eq!(cli.command, ["check"]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--no-such-flag", "--", "true"][..],
            &["--timeout", "0", "true"],
            &["--timeout", "abc", "true"],
            &["--credential", "magic", "true"],
            &["--cloud", "mars", "true"],
            &["--client-id", "a", "--object-id", "b", "true"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
