//! Replacing kvrun with the command: `execvpe`, so the command keeps kvrun's PID and
//! signals reach it directly (kvrun is not an init; put tini in front if PID 1 needs
//! reaping). Only returns on failure, with the exit status the contract gives:
//! 127 when the command is not found, 126 when it is found but cannot be executed.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt as _;

use nix::errno::Errno;

use crate::child_env::ChildEnv;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{program}: {reason}")]
pub struct ExecError {
    pub program: String,
    pub reason: String,
    pub exit_code: i32,
}

/// Executes `command` with `env`. Returns only if the exec failed.
pub fn exec(command: &[OsString], env: &ChildEnv) -> ExecError {
    let program = command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |reason: String, exit_code| ExecError {
        program: program.clone(),
        reason,
        exit_code,
    };
    let args: Result<Vec<CString>, _> =
        command.iter().map(|a| CString::new(a.as_bytes())).collect();
    let Ok(args) = args else {
        return fail("an argument contains a NUL byte".to_owned(), 126);
    };
    let Some(file) = args.first() else {
        return fail("no command given".to_owned(), 125);
    };
    let env = env.as_c_strs();
    let errno = match nix::unistd::execvpe(file, &args, &env) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    match errno {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG | Errno::ELOOP => {
            fail("command not found".to_owned(), 127)
        }
        // Too large an environment is kvrun's failure to build one, not the command's.
        Errno::E2BIG => fail(
            "the environment and arguments are too large to execute".to_owned(),
            125,
        ),
        Errno::EACCES => fail("permission denied (not executable?)".to_owned(), 126),
        Errno::ENOEXEC => fail("not an executable format".to_owned(), 126),
        other => fail(format!("cannot execute: {}", other.desc()), 126),
    }
}
