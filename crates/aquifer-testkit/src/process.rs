//! A server process the test kit started: spawned as the server's user,
//! waited for until it is ready, signalled and reaped.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::pg::{signal_and_reap, tail};
use crate::TestkitError;

/// The server's child process, while it runs.
#[derive(Debug, Default)]
pub(crate) struct ServerProcess {
    child: Option<Child>,
}

impl ServerProcess {
    /// Spawns `cmd`, as `owner` when given (uid, gid). `what` names the
    /// program in the error.
    pub(crate) fn spawn(
        &mut self,
        cmd: &mut Command,
        owner: Option<(u32, u32)>,
        what: &'static str,
    ) -> Result<(), TestkitError> {
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().map_err(|e| TestkitError::io(what, e))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id, while running.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` and waits for the process to exit (killing it after
    /// `patience`). Nothing to do when it is not running.
    pub(crate) fn halt(&mut self, signal: &str, patience: Duration) -> Result<(), TestkitError> {
        match self.child.take() {
            Some(child) => signal_and_reap(child, signal, patience),
            None => Ok(()),
        }
    }

    /// Polls `ready` every 5 ms until it holds. When the process exits
    /// first, or `within` passes, stops it with `abort_signal` and fails
    /// with the tail of `log()`.
    pub(crate) fn wait_ready(
        &mut self,
        server: &'static str,
        within: Duration,
        abort_signal: &str,
        mut ready: impl FnMut() -> bool,
        log: impl FnOnce() -> String,
    ) -> Result<(), TestkitError> {
        let give_up = Instant::now() + within;
        loop {
            if ready() {
                return Ok(());
            }
            if !self.is_running() || Instant::now() > give_up {
                let _ = self.halt(abort_signal, Duration::from_secs(5));
                return Err(TestkitError::Startup {
                    server,
                    log: tail(&log(), 20),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
