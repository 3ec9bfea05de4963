//! Process hygiene while secrets are in memory: no core dumps.
//!
//! `PR_SET_DUMPABLE = 0` stops core dumps and ptrace attachment by other processes of
//! the same user, and makes `/proc/<pid>/` files root-owned; `execve` resets it, so
//! the command starts with the usual setting. `RLIMIT_CORE` is lowered to 0 as well
//! (for kernels configured to pipe cores elsewhere) and restored just before exec,
//! because the command inherits it.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

#[derive(Debug)]
pub struct CoreDumpsOff {
    saved_core_limit: Option<(u64, u64)>,
}

/// Turns core dumps off for as long as the guard lives (and exec has not happened).
pub fn disable_core_dumps() -> CoreDumpsOff {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        crate::warn!("could not turn off core dumps (prctl PR_SET_DUMPABLE): {e}");
    }
    let saved_core_limit = match getrlimit(Resource::RLIMIT_CORE) {
        Ok((soft, hard)) => match setrlimit(Resource::RLIMIT_CORE, 0, hard) {
            Ok(()) => Some((soft, hard)),
            Err(e) => {
                crate::warn!("could not set RLIMIT_CORE to 0: {e}");
                None
            }
        },
        Err(_) => None,
    };
    CoreDumpsOff { saved_core_limit }
}

impl CoreDumpsOff {
    /// Gives the command the core-size limit kvrun was started with.
    pub fn restore_limit_for_exec(&self) {
        if let Some((soft, hard)) = self.saved_core_limit
            && let Err(e) = setrlimit(Resource::RLIMIT_CORE, soft, hard)
        {
            crate::warn!("could not restore RLIMIT_CORE: {e}");
        }
    }
}
