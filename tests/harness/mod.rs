//! The fluent harness: an emulator per test, and the real `kvrun` binary run against
//! it with a scrubbed environment, the way a user's shell would run it.
//!
//! ```ignore
//! let azure = Azure::start(SECRETS);
//! azure.kvrun().args(["-s", "A=db"]).child_prints("A").run().code(0).stdout("value");
//! ```

#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failed setup should panic"
)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use kvrun_emulator::{Config, Emulator, RequestRecord};

/// A private scratch directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "kvrun-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running emulator and a scratch directory for the test.
pub struct Azure {
    pub emulator: Emulator,
    pub dir: TempDir,
}

impl Azure {
    /// Starts the emulator with a TOML configuration (the same format as
    /// `kvrun-emulator --config`).
    pub fn start(config: &str) -> Self {
        let config =
            Config::from_toml(config, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
        Self {
            emulator: Emulator::start(config).expect("emulator starts"),
            dir: TempDir::new(),
        }
    }

    /// The emulator's variable `name` (from what it would export).
    pub fn env_var(&self, name: &str) -> String {
        self.emulator
            .env()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("the emulator exports no {name}"))
    }

    pub fn vault(&self, name: &str) -> String {
        self.emulator
            .vault_url(name)
            .unwrap_or_else(|| panic!("no vault {name}"))
    }

    /// `keyvault://127.0.0.1:PORT/NAME` for a secret in one of the emulator's vaults.
    pub fn reference(&self, vault: &str, secret: &str) -> String {
        format!(
            "keyvault://{}/{secret}",
            self.vault(vault).trim_start_matches("https://")
        )
    }

    /// kvrun, pointed at the emulator's IMDS and trusting its CA, with nothing else
    /// from the test process's environment.
    pub fn kvrun(&self) -> Run {
        Run::new(self.dir.path())
            .env(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                self.emulator.imds_host(),
            )
            .env("SSL_CERT_FILE", self.emulator.ca_pem_path())
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.emulator.requests()
    }

    /// Requests that reached `endpoint` ("imds", "vault:demo", …).
    pub fn requests_to(&self, endpoint: &str) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.endpoint == endpoint)
            .collect()
    }
}

/// One invocation of the real binary.
pub struct Run {
    args: Vec<OsString>,
    env: BTreeMap<OsString, OsString>,
    cwd: PathBuf,
    child: Vec<OsString>,
}

pub const KVRUN: &str = env!("CARGO_BIN_EXE_kvrun");

impl Run {
    pub fn new(cwd: &Path) -> Self {
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".into(),
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        );
        Self {
            args: Vec::new(),
            env,
            cwd: cwd.to_owned(),
            child: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    pub fn env_remove(mut self, name: &str) -> Self {
        self.env.remove(&OsString::from(name));
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = dir.to_owned();
        self
    }

    /// The command kvrun should exec (after `--`).
    pub fn command<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, command: I) -> Self {
        self.child = command.into_iter().map(Into::into).collect();
        self
    }

    /// Exec a shell that prints each variable's value as `NAME=<value>|`, byte-exact;
    /// an unset variable prints `NAME unset|`.
    pub fn child_prints(self, vars: &[&str]) -> Self {
        let script: String = vars
            .iter()
            .map(|v| format!("if [ -n \"${{{v}+x}}\" ]; then printf '%s=%s|' {v} \"${v}\"; else printf '%s unset|' {v}; fi; "))
            .collect();
        self.command(["/bin/sh", "-c", &script])
    }

    /// Exec a shell that creates `marker`: its absence proves no child started.
    pub fn child_touches(self, marker: &Path) -> Self {
        let marker = marker.to_str().unwrap().to_owned();
        self.command(["/bin/sh", "-c", "touch \"$0\"", &marker])
    }

    pub fn run(self) -> Outcome {
        let mut command = Command::new(KVRUN);
        command.args(&self.args);
        if !self.child.is_empty() {
            command.arg("--").args(&self.child);
        }
        command
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        let output = command.output().expect("kvrun runs");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// What one invocation did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "exit status\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.code(0)
    }

    #[track_caller]
    pub fn stdout(&self, expected: &str) -> &Self {
        assert_eq!(
            self.stdout, expected,
            "stdout\n--- stderr:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stderr:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.stderr.contains(needle),
            "stderr has {needle:?}\n--- stderr:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_empty(&self) -> &Self {
        assert_eq!(self.stderr, "", "stderr should be empty");
        self
    }

    /// Neither stream contains `secret`.
    #[track_caller]
    pub fn never_shows(&self, secret: &str) -> &Self {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "a secret leaked into kvrun's output"
        );
        self
    }
}

/// The emulator configuration most tests share: vault `demo`, a system-assigned
/// identity allowed everything, a user-assigned one with no grant, and secrets.
pub const STANDARD: &str = r#"
[[vault]]
name = "demo"
[[vault.secret]]
name = "db-password"
value = "s3cr3t-db"
[[vault.secret]]
name = "api-key"
value = "k3y-api"
[[vault.secret]]
name = "disabled-one"
value = "never-seen"
enabled = false
[[vault.secret]]
name = "multi"
[[vault.secret.version]]
id = "00000000000000000000000000000001"
value = "first"
[[vault.secret.version]]
id = "00000000000000000000000000000002"
value = "second"

[[identity]]
name = "system"
kind = "system-assigned"

[[identity]]
name = "outsider"
kind = "user-assigned"
client_id = "11111111-1111-4111-8111-111111111111"
object_id = "22222222-2222-4222-8222-222222222222"

[[grant]]
identity = "system"
vault = "demo"
permissions = ["get", "list", "set", "delete"]
"#;
