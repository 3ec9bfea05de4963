//! The `kvrun-emulator` command: start every endpoint, publish the `export`
//! lines (to `--env-file` atomically, and/or to stdout with `--print-env`),
//! then serve until SIGINT or SIGTERM.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kvrun_emulator::{Config, Emulator, export_lines};
use nix::sys::signal::{SigSet, Signal};

/// A local Azure: IMDS, App Service identity, Entra ID and Key Vault on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "kvrun-emulator", version, about)]
struct Cli {
    /// TOML configuration (default: one vault `demo` and one system-assigned identity).
    #[arg(long, value_name = "FILE", env = "KVRUN_EMULATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Write the `export` lines here (atomically) once every endpoint listens.
    #[arg(long, value_name = "PATH", env = "KVRUN_EMULATOR_ENV_FILE")]
    env_file: Option<PathBuf>,
    /// Print the `export` lines on stdout, then detach stdout so that
    /// `eval "$(kvrun-emulator --print-env &)"` returns at once.
    #[arg(long, env = "KVRUN_EMULATOR_PRINT_ENV")]
    print_env: bool,
    /// Append one JSON line per request to this file (tokens reduced to fingerprints).
    #[arg(long, value_name = "PATH", env = "KVRUN_EMULATOR_LOG_REQUESTS")]
    log_requests: Option<PathBuf>,
    /// Export the variables that select this managed-identity source instead
    /// of App Service's: imds, arc, cloud-shell, service-fabric, azure-ml,
    /// app-service-legacy.
    #[arg(long, value_name = "SOURCE", env = "KVRUN_EMULATOR_EXPORT_SOURCE",
          value_parser = clap::builder::PossibleValuesParser::new(kvrun_emulator::SOURCES))]
    export_source: Option<String>,
    /// Directory for ca.pem and token files (default: a fresh private directory
    /// under the temp dir, removed on exit).
    #[arg(long, value_name = "DIR", env = "KVRUN_EMULATOR_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

fn fail(message: &str) -> ExitCode {
    #[allow(clippy::print_stderr)] // The command's one error line.
    {
        eprintln!("kvrun-emulator: {message}");
    }
    ExitCode::FAILURE
}

/// Writes the export lines to stdout, then points fd 1 at /dev/null: the
/// shell's `$(...)` reads until every writer closes the pipe, so keeping it
/// open would make the command substitution wait for the emulator to exit.
fn print_env(lines: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    #[allow(clippy::print_stdout)] // This is the command's output.
    {
        out.write_all(lines.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing to stdout: {e}"))?;
    }
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?;
    nix::unistd::dup2_stdout(&null).map_err(|e| format!("detaching stdout: {e}"))?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Block the stop signals before any thread exists, so that every runtime
    // thread inherits the mask and the main thread alone receives them below.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        return fail(&format!("blocking signals: {e}"));
    }
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => return fail(&e.to_string()),
        },
        None => Config::default(),
    };
    let mut config = config;
    if let Some(dir) = &cli.state_dir {
        config = config.with_state_dir(dir);
    }
    if let Some(log) = &cli.log_requests {
        config = config.with_request_log(log);
    }
    let emulator = match Emulator::start(config) {
        Ok(e) => e,
        Err(e) => return fail(&e.to_string()),
    };
    let pairs = match &cli.export_source {
        Some(source) => emulator.env_for_source(source).unwrap_or_default(),
        None => emulator.env(),
    };
    let lines = export_lines(&pairs);
    if let Some(path) = &cli.env_file
        && let Err(e) = write_env_file(path, &lines)
    {
        return fail(&format!("cannot write {}: {e}", path.display()));
    }
    if cli.print_env
        && let Err(e) = print_env(&lines)
    {
        return fail(&e);
    }
    let _ = signals.wait();
    if let Some(path) = &cli.env_file {
        let _ = std::fs::remove_file(path);
    }
    emulator.shutdown();
    ExitCode::SUCCESS
}

/// Temp file in the same directory, then rename: a reader polling for the
/// file never sees it half written.
fn write_env_file(path: &std::path::Path, lines: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(".kvrun-emulator-env.{}.tmp", std::process::id()));
    std::fs::write(&tmp, lines)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
