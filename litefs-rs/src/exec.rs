//! `exec`: the application's commands, run by `litefs-rs mount` once the node is ready (or at
//! once with `skip-sync`). All but the last run to completion, in order (migrations); a
//! command with `if-candidate: true` runs only on a candidate. The last one is the application:
//! SIGINT and SIGTERM are forwarded to it, and when it exits the node shuts down and
//! `litefs-rs` exits with its code. A command that cannot start, or one before the application
//! that fails, is a failure of the node ([`Outcome::Failed`]; `exit-on-error` decides).

use std::process::{Command, ExitStatus};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot, watch};

/// One command to run.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The program and its arguments.
    pub args: Vec<String>,
    /// Only on a candidate.
    pub if_candidate: bool,
}

/// What ended the wait for the node.
#[derive(Debug)]
pub enum Outcome {
    /// A shutdown signal arrived (the commands did not all run).
    Signal(libc::c_int),
    /// The last command (the application) exited with this code, or a command before it did
    /// after a shutdown signal was forwarded to it.
    Exited(i32),
    /// A command could not start, or one before the application failed: the node's run
    /// failed (`exit-on-error` decides what follows).
    Failed {
        /// The exit code to stop with: the failed command's, or 1 if it could not start.
        code: i32,
        /// What failed.
        error: anyhow::Error,
    },
}

/// The shell's convention for an exit status: the code, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Sends `sig` to process `pid`.
fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's, not reaped yet
    // (its waiter thread reaps it only when it exits, after which the send fails harmlessly or,
    // at worst, is never attempted because the exit was seen first).
    #[allow(unsafe_code)]
    let _ = unsafe { libc::kill(pid, sig) };
}

/// Runs `cmd` and waits for it, forwarding the signals that arrive meanwhile. Returns its exit
/// code and whether a signal was forwarded.
async fn run_one(
    cmd: &Exec,
    signals: &mut mpsc::UnboundedReceiver<libc::c_int>,
) -> Result<(i32, bool)> {
    let (program, args) = cmd.args.split_first().context("an exec command is empty")?;
    let mut command = Command::new(program);
    command.args(args);
    // litefs-rs blocks SIGINT and SIGTERM in all its threads (one thread waits for them), and
    // a child inherits that mask: unblock them in the application, or it could never receive
    // the signals forwarded to it.
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe functions on a set of its own.
    #[allow(unsafe_code)]
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(|| {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("start exec command {:?}", cmd.args.join(" ")))?;
    let pid = child.id();
    tracing::info!(pid, cmd = %cmd.args.join(" "), "exec command started");
    let (done_tx, mut done) = oneshot::channel();
    std::thread::Builder::new()
        .name("exec-wait".into())
        .spawn(move || {
            let _ = done_tx.send(child.wait());
        })
        .context("start the exec waiter thread")?;
    let mut forwarded = false;
    loop {
        tokio::select! {
            status = &mut done => {
                let status = status
                    .context("the exec waiter thread stopped")?
                    .context("wait for the exec command")?;
                return Ok((exit_code(status), forwarded));
            }
            Some(sig) = signals.recv() => {
                tracing::info!(pid, signal = sig, "forwarding the signal to the exec command");
                signal(pid, sig);
                forwarded = true;
            }
        }
    }
}

/// Waits until the node is ready (unless `skip_sync`), then runs the commands.
pub async fn supervise(
    commands: Vec<Exec>,
    candidate: bool,
    skip_sync: bool,
    mut ready: watch::Receiver<bool>,
    signals: &mut mpsc::UnboundedReceiver<libc::c_int>,
) -> Outcome {
    if !skip_sync {
        tokio::select! {
            r = ready.wait_for(|r| *r) => {
                if r.is_err() {
                    return Outcome::Exited(1);
                }
            }
            Some(sig) = signals.recv() => return Outcome::Signal(sig),
        }
    }
    let last = commands.len().saturating_sub(1);
    for (i, cmd) in commands.iter().enumerate() {
        if cmd.if_candidate && !candidate {
            tracing::info!(cmd = %cmd.args.join(" "), "exec: not a candidate, skipping");
            continue;
        }
        match run_one(cmd, signals).await {
            Ok((code, _)) if i == last => {
                tracing::info!(code, "the exec command exited: shutting down");
                return Outcome::Exited(code);
            }
            Ok((0, false)) => {}
            Ok((code, true)) => {
                tracing::info!(code, cmd = %cmd.args.join(" "), "exec command stopped by the signal");
                return Outcome::Exited(code);
            }
            Ok((code, false)) => {
                return Outcome::Failed {
                    code: code.max(1),
                    error: anyhow::anyhow!(
                        "exec command {:?} failed with exit code {code}",
                        cmd.args.join(" ")
                    ),
                };
            }
            Err(error) => return Outcome::Failed { code: 1, error },
        }
    }
    // Every command was skipped: serve until a signal, as without exec.
    match signals.recv().await {
        Some(sig) => Outcome::Signal(sig),
        None => Outcome::Exited(0),
    }
}
