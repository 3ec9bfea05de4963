//! The `kvrun-emulator` command as a shell user meets it: `--print-env` in a
//! command substitution, `--env-file`, signals, and one-line errors with a
//! non-zero exit.

// Test helpers state their expectations with expect(); a failure is the test's.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_kvrun-emulator");

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvrun-emulator-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| {
            let rest = l.strip_prefix("export ").expect("export line");
            let (k, v) = rest.split_once('=').expect("assignment");
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .expect("quoted");
            (k.to_owned(), v.replace("'\\''", "'"))
        })
        .collect()
}

fn value(env: &[(String, String)], k: &str) -> String {
    env.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{k}"))
}

/// Whether `pid` still runs. A zombie has exited: once `sh` is gone nobody
/// reaps the emulator it started but init, which may take its time.
fn running(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    !matches!(state, Some(Some('Z')) | None)
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) {
        assert!(Instant::now() < deadline, "emulator {pid} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn print_env_in_a_command_substitution_returns_at_once() {
    let dir = temp_dir("print-env");
    let state = dir.join("state");
    let started = Instant::now();
    // What `eval "$(kvrun-emulator --print-env &)"` does: the substitution
    // ends when every writer has closed the pipe.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{BIN}' --print-env --state-dir '{}' &",
            state.display()
        ))
        .stderr(Stdio::inherit())
        .output()
        .expect("sh");
    assert!(out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let env = parse_exports(&String::from_utf8(out.stdout).expect("utf-8"));
    let pid: i32 = value(&env, "KVRUN_EMULATOR_PID").parse().expect("pid");
    assert!(value(&env, "KVRUN_VAULT").starts_with("https://127.0.0.1:"));
    assert_eq!(
        value(&env, "SSL_CERT_FILE"),
        state.join("ca.pem").display().to_string()
    );
    assert!(state.join("ca.pem").exists());
    // Still serving after the shell returned.
    let imds = value(&env, "AZURE_POD_IDENTITY_AUTHORITY_HOST");
    let addr = imds.trim_start_matches("http://");
    assert!(std::net::TcpStream::connect(addr).is_ok());

    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("signal");
    wait_gone(pid);
    // The state dir did not exist before, so the emulator removed it.
    assert!(!state.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn env_file_is_written_and_sigint_exits_zero() {
    let dir = temp_dir("env-file");
    let env_file = dir.join("emu.env");
    let log = dir.join("requests.jsonl");
    let mut child = Command::new(BIN)
        .arg("--env-file")
        .arg(&env_file)
        .env("KVRUN_EMULATOR_LOG_REQUESTS", &log)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env_file.exists() {
        assert!(Instant::now() < deadline, "no env file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let env = parse_exports(&std::fs::read_to_string(&env_file).expect("env file"));
    assert_eq!(value(&env, "KVRUN_EMULATOR_PID"), child.id().to_string());
    let state = Path::new(&value(&env, "SSL_CERT_FILE"))
        .parent()
        .expect("state dir")
        .to_path_buf();
    assert!(state.starts_with(std::env::temp_dir()));
    // One request, logged through the env-var form of --log-requests.
    let imds = value(&env, "AZURE_POD_IDENTITY_AUTHORITY_HOST");
    let mut s = std::net::TcpStream::connect(imds.trim_start_matches("http://")).expect("connect");
    std::io::Write::write_all(
        &mut s,
        b"GET /metadata/identity/oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGINT,
    )
    .expect("signal");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(!state.exists(), "state dir removed");
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("\"status\":400"), "{logged}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_failing(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn bad_configs_give_one_line_with_file_line_column() {
    let dir = temp_dir("bad-config");
    let cfg = dir.join("emu.toml");
    std::fs::write(
        &cfg,
        "[[vault]]\nname = \"demo\"\n[[vault]]\nname = \"demo\"\n",
    )
    .expect("write");
    let err = run_failing(&["--config", cfg.to_str().expect("utf-8")]);
    assert_eq!(
        err.trim_end(),
        format!(
            "kvrun-emulator: {}:4:8: duplicate vault name `demo`",
            cfg.display()
        )
    );
    std::fs::write(
        &cfg,
        "[[identity]]\nname = \"a\"\nkind = \"system-assigned\"\n[[grant]]\nidentity = \"b\"\nvault = \"v\"\npermissions = []\n",
    )
    .expect("write");
    let err = run_failing(&["--config", cfg.to_str().expect("utf-8")]);
    assert!(
        err.contains(":5:12: grant names unknown identity `b`"),
        "{err}"
    );
    let missing = dir.join("missing.toml");
    let err = run_failing(&["--config", missing.to_str().expect("utf-8")]);
    assert!(err.contains("cannot read the configuration file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_port_in_use_fails_with_one_line() {
    let dir = temp_dir("port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cfg = dir.join("emu.toml");
    std::fs::write(&cfg, format!("[imds]\nport = {port}\n")).expect("write");
    let err = run_failing(&["--config", cfg.to_str().expect("utf-8")]);
    assert!(
        err.starts_with(&format!(
            "kvrun-emulator: cannot listen on 127.0.0.1:{port} for imds: "
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
