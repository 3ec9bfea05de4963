//! kvrun: run a command with Azure Key Vault secrets in its environment.
//!
//! This library is kvrun's implementation, not a public API: no semver promises.
//! The flow of one run, in order (each step in its own module):
//! 1. parse the command line (`cli`) — usage errors exit 125;
//! 2. turn core dumps off while secrets are held (`hygiene`);
//! 3. build and validate the plan: variable -> secret (`config`, `reference`);
//! 4. pick the credential (`credential`), fetch every secret concurrently
//!    (`resolve`, `keyvault`, `http`, `retry`) on a single-threaded runtime;
//! 5. fail closed: any required secret missing and the command never starts (`error`);
//! 6. drop the runtime, build the child's environment (`child_env`) and exec (`exec`).

pub mod check;
pub mod child_env;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod credential;
pub mod error;
pub mod exec;
pub mod http;
pub mod hygiene;
pub mod keyvault;
pub mod log;
pub mod reference;
pub mod resolve;
pub mod retry;
pub mod secret;
pub mod timings;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser as _;

use cli::{Cli, Command};
use error::{Error, SecretFailure, SecretsFailed};

/// Runs kvrun with `args` (argv including the program name). Returns the exit status
/// when it does not exec; on success the process has become the command.
pub fn run(args: Vec<OsString>) -> i32 {
    let started = Instant::now();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not failures; everything else is a usage
            // error, which the contract puts at 125 (not clap's 2).
            return if e.use_stderr() {
                error::EXIT_KVRUN_FAILED
            } else {
                0
            };
        }
    };
    let level = cli
        .options
        .log_level
        .unwrap_or_else(|| log::Level::from_verbosity(cli.options.verbose));
    log::init(level, cli.options.log_format);
    let core_dumps = hygiene::disable_core_dumps();
    match execute(&cli, started, &core_dumps) {
        Ok(code) => code,
        Err(e) => {
            error::report(&e);
            e.exit_code()
        }
    }
}

fn execute(cli: &Cli, started: Instant, core_dumps: &hygiene::CoreDumpsOff) -> Result<i32, Error> {
    let is_check = matches!(cli.subcommand, Some(Command::Check));
    if !is_check && cli.command.is_empty() {
        return Err(Error::Usage("no command given".to_owned()));
    }
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Setup(format!("cannot read the current directory: {e}")))?;
    let plan = config::build_plan(&cli.options, &env, &cwd).map_err(Error::Config)?;
    if let Some(file) = &plan.file {
        info!("mapping file: {}", file.display());
    }
    for binding in &plan.bindings {
        debug!(
            "{} <- {}/{} ({}{})",
            binding.var,
            binding.secret.vault,
            binding.secret.name,
            binding.source,
            if binding.optional { ", optional" } else { "" }
        );
    }

    let timings = Arc::new(timings::Timings::new(started));
    let resolution = if plan.bindings.is_empty() {
        info!("no secrets mapped; running the command as is");
        resolve::Resolution::default()
    } else {
        // The deadline starts before selection: decrypting a PKCS#12 file is part of it.
        let deadline = retry::Deadline::after(cli.options.timeout);
        let selection = credential::Selection {
            kind: cli.options.credential,
            user_assigned: user_assigned(&cli.options),
            cloud: plan.cloud,
            budget: deadline.remaining(),
        };
        let credential = credential::select(&selection, &credential::Env::from_pairs(&env))
            .map_err(Error::Credential)?;
        info!("identity: {}", credential.description());
        let clients =
            http::Clients::new(&cli.options.resolve).map_err(|e| Error::Setup(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Setup(format!("cannot start the async runtime: {e}")))?;
        let resolution = runtime.block_on(resolve::resolve(
            &plan,
            credential,
            clients,
            deadline,
            timings.clone(),
        ));
        // A DNS lookup stuck in tokio's blocking pool must not hold kvrun past its
        // deadline: give the pool a moment, then leave it (exec ends every thread).
        runtime.shutdown_timeout(std::time::Duration::from_millis(100));
        resolution
    };

    if is_check {
        let code = check::print(&plan, &resolution);
        if let Some(failed) = failures(&plan, &resolution) {
            error::report(&Error::Secrets(Box::new(failed)));
        }
        return Ok(code);
    }
    if let Some(failed) = failures(&plan, &resolution) {
        return Err(Error::Secrets(Box::new(failed)));
    }

    let mut set = Vec::with_capacity(plan.bindings.len());
    let mut unset = Vec::new();
    for binding in &plan.bindings {
        match resolution.outcomes.get(&binding.secret) {
            Some(Ok(fetched)) => set.push((binding.var.as_str(), &fetched.value)),
            Some(Err(e)) => {
                warn!(
                    "{}: optional secret {} in {} is absent ({e}); leaving {} unset",
                    binding.var, binding.secret.name, binding.secret.vault, binding.var
                );
                unset.push(binding.var.as_str());
            }
            None => unset.push(binding.var.as_str()),
        }
    }
    let child_env = child_env::ChildEnv::build(&env, &set, &unset).map_err(Error::ChildEnv)?;
    info!(
        "exec {} with {} variable{} set from Key Vault",
        cli.command[0].to_string_lossy(),
        set.len(),
        if set.len() == 1 { "" } else { "s" }
    );
    if cli.options.timings {
        timings.print(log::json_format());
    }
    core_dumps.restore_limit_for_exec();
    let failure = exec::exec(&cli.command, &child_env);
    // The exec failed: wipe every secret before reporting.
    drop(set);
    drop(child_env);
    drop(resolution);
    Err(Error::Exec(failure))
}

fn user_assigned(options: &cli::Options) -> Option<credential::UserAssigned> {
    use credential::UserAssigned;
    options
        .client_id
        .clone()
        .map(UserAssigned::ClientId)
        .or_else(|| options.object_id.clone().map(UserAssigned::ObjectId))
        .or_else(|| options.resource_id.clone().map(UserAssigned::ResourceId))
}

/// The failing required variables, or None when the child may start.
fn failures(plan: &config::Plan, resolution: &resolve::Resolution) -> Option<SecretsFailed> {
    let failures: Vec<SecretFailure> = plan
        .bindings
        .iter()
        .filter_map(|b| match resolution.outcomes.get(&b.secret) {
            Some(Err(e)) if !(b.optional && e.is_absent()) => Some(SecretFailure {
                var: b.var.clone(),
                secret: b.secret.clone(),
                error: e.clone(),
            }),
            Some(_) => None,
            // Every secret gets an outcome; if one ever did not, fail closed.
            None => Some(SecretFailure {
                var: b.var.clone(),
                secret: b.secret.clone(),
                error: keyvault::FetchError::DeadlineExceeded,
            }),
        })
        .collect();
    (!failures.is_empty()).then(|| SecretsFailed {
        failures,
        identities: resolution.identities.clone(),
        challenge_tenants: resolution.challenge_tenants.clone(),
    })
}
