//! `failover run --name NAME [--id ID] [--restart] [--grace DUR] -- CMD ARGS...`:
//! a supervisor that takes part in the election of NAME and runs CMD only while
//! it is master.

use std::ffi::OsString;
use std::time::Duration;

use clap::Args;
use failover::{Intervals, Options};

use crate::duration;

/// What `run` takes.
#[derive(Debug, Args)]
#[command(after_help = "\
The command runs only while this process is master, with FAILOVER_EPOCH (the fencing
token), FAILOVER_SUBSYSTEM and FAILOVER_MEMBER in its environment, in the process group
of its leash: a small process (this binary) that holds the master's deadline on
CLOCK_BOOTTIME, is extended after each renewal, and SIGKILLs the group when the deadline
passes, even if this supervisor is stopped (SIGSTOP, Ctrl-Z), starved or blocked.

- When the command exits on its own, the lease is released and failover exits with the
  command's status (with --restart, the command is started again while still master,
  at most twice a second).
- Step-down, SIGTERM, SIGINT (Ctrl-C) or SIGHUP: SIGTERM to the command's process
  group, up to --grace while the lease is still held, then SIGKILL; then the lease is
  released. After a step-down the supervisor stays a standby and runs the command again
  on its next term; after a signal it exits with status 0.
- The lease is lost (no renewal before the deadline): SIGKILL to the group at once, by
  the supervisor or its leash, before any standby may take over; the supervisor stays a
  standby.
- The supervisor is killed (even SIGKILL): the leash kills the group at once, and the
  kernel kills the command (PR_SET_PDEATHSIG). Processes that leave the group (setsid)
  are not covered.
- Not covered: the supervisor and the leash stopped together (a frozen cgroup, a paused
  machine); the leash kills on its first instant of CPU after.
- The supervisor's messages never block it: when stderr is not read, they are dropped
  and counted.

Examples:
  failover run --name billing -- ./billing-worker --port 8080
  failover run --name cron --id host-a --restart --grace 30s -- ./cron-daemon
  failover run --name tick --lease 1s -- sh -c 'echo \"master under epoch $FAILOVER_EPOCH\"; sleep 600'")]
pub struct RunArgs {
    /// The subsystem's name, the same for every supervisor of the command
    #[arg(long)]
    name: String,
    /// This supervisor's member id [default: hostname:pid]
    #[arg(long)]
    id: Option<String>,
    /// Start the command again when it exits while this process is still master
    #[arg(long)]
    restart: bool,
    /// How long the command may take to stop after SIGTERM before SIGKILL
    #[arg(long, default_value = "10s", value_parser = duration)]
    grace: Duration,
    /// The lease duration; the renewal and check intervals follow it
    /// [default: 3s, renewed every 2s]
    #[arg(long, value_parser = duration)]
    lease: Option<Duration>,
    /// The command and its arguments, after `--`
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

impl RunArgs {
    /// The member's options (the connection's, plus the timings), the lease, and
    /// how often the master renews it.
    fn member_options(&self, options: Options) -> (Options, Duration, Duration) {
        let mut options = options;
        if let Some(id) = &self.id {
            options = options.member_id(id);
        }
        let defaults = Intervals::default();
        let (lease, renew_every) = match self.lease {
            Some(lease) => (lease, lease * 2 / 3),
            None => (defaults.master.saturating_mul(3) / 2, defaults.master),
        };
        if let Some(lease) = self.lease {
            // The original's proportions: renew at 2/3 of the lease, check at 5/6.
            options = options
                .intervals(Intervals {
                    init: Duration::ZERO,
                    master: renew_every,
                    slave: lease * 5 / 6,
                    ticking: lease * 2 / 3,
                    error: (lease * 5 / 3).min(Duration::from_secs(5)),
                })
                .lease(lease);
        }
        // The election waits for the command to stop (the grace period, then the
        // kill) before it releases the lease; it must never give up first.
        let options = options.shutdown_timeout(self.grace + lease + Duration::from_secs(1));
        (options, lease, renew_every)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub use linux::run;

/// Not on this system.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub async fn run(_: Options, _: RunArgs) -> u8 {
    eprintln!(
        "failover: `run` needs Linux: its leash holds the deadline on CLOCK_BOOTTIME and kills the command's process group"
    );
    crate::RUN_FAILED
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use std::io;
    use std::process::ExitStatus;
    use std::sync::Arc;
    use std::time::Duration;

    use failover::{Leadership, Member, Options};
    use rustix::process::{kill_process_group, Pid, Signal};
    use tokio::process::{Child, Command};
    use tokio::signal::unix::{signal, Signal as Listener, SignalKind};
    use tracing_subscriber::layer::SubscriberExt;

    use super::RunArgs;
    use crate::leash::{DeadlineLayer, Feed, Leash};
    use crate::log::{flush, note};
    use crate::{command_line, CANNOT_EXECUTE, COMMAND_NOT_FOUND, OK, RUN_FAILED};

    /// How often a stopping supervisor checks that its lease is still valid.
    const LEASE_CHECK: Duration = Duration::from_millis(5);

    /// With `--restart`, a command that ran shorter than this is started again
    /// only this long after its last start (a crash loop does not spin).
    const RESTART_PAUSE: Duration = Duration::from_millis(500);

    /// A command is started only with a deadline at least this far ahead.
    const AHEAD: Duration = Duration::from_millis(5);

    /// How long the last messages may take to reach stderr before exiting.
    const FLUSH: Duration = Duration::from_millis(500);

    /// SIGTERM, SIGINT and SIGHUP (a closed terminal).
    struct Stop {
        term: Listener,
        int: Listener,
        hup: Listener,
    }

    impl Stop {
        fn new() -> io::Result<Stop> {
            Ok(Stop {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        }

        /// Resolves at the next SIGTERM, SIGINT or SIGHUP.
        async fn requested(&mut self) -> &'static str {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = self.hup.recv() => "SIGHUP",
            }
        }
    }

    /// How a run of the command ended.
    enum End {
        Exited(io::Result<ExitStatus>),
        TermEnded,
        LeashEnded,
        Stop(&'static str),
    }

    /// The supervisor: waits for mastership, runs the command for each term under
    /// a leash, stops it when the term ends; see [`RunArgs`].
    pub async fn run(options: Options, args: RunArgs) -> u8 {
        let code = supervise(options, args).await;
        flush(FLUSH);
        code
    }

    async fn supervise(options: Options, args: RunArgs) -> u8 {
        let mut stop = match Stop::new() {
            Ok(stop) => stop,
            Err(e) => {
                note(format_args!(
                    "cannot listen for SIGTERM, SIGINT and SIGHUP: {e}"
                ));
                return RUN_FAILED;
            }
        };
        let shown = command_line(&args.command);
        let (options, lease, renew_every) = args.member_options(options);
        // The leash's deadlines come from the election's spans: the layer must be
        // in place before the member starts.
        let feed = Feed::new(lease, renew_every);
        let subscriber = tracing_subscriber::registry().with(DeadlineLayer(feed.clone()));
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            note(format_args!("cannot follow the lease's renewals"));
            return RUN_FAILED;
        }
        let member = match Member::start(&args.name, options).await {
            Ok(member) => Arc::new(member),
            Err(e) => {
                fail(&e);
                return RUN_FAILED;
            }
        };
        feed.follow(member.clone());
        note(format_args!(
            "member {} of {}: waiting to be master",
            member.member_id(),
            args.name
        ));
        'terms: loop {
            let term = tokio::select! {
                term = member.leadership() => match term {
                    Ok(term) => term,
                    Err(e) => {
                        fail(&e);
                        return RUN_FAILED;
                    }
                },
                signal = stop.requested() => {
                    note(format_args!("{signal}: leaving the election"));
                    return leave(&member, OK).await;
                }
            };
            let epoch = term.epoch();
            loop {
                // The leash first, holding the term's deadline; then the command,
                // in the leash's process group.
                let deadline = tokio::select! {
                    deadline = feed.deadline(epoch, AHEAD) => deadline,
                    _ = term.cancelled() => {
                        drop(term);
                        continue 'terms;
                    }
                    signal = stop.requested() => {
                        note(format_args!("{signal}: releasing the lease"));
                        drop(term);
                        return leave(&member, OK).await;
                    }
                };
                let mut leash = match Leash::spawn(&feed, epoch, deadline) {
                    Ok(leash) => leash,
                    Err(e) => {
                        note(format_args!("cannot start the leash of `{shown}`: {e}"));
                        drop(term);
                        return leave(&member, RUN_FAILED).await;
                    }
                };
                let group = leash.group();
                let mut child = match spawn(&args, &member, epoch, group) {
                    Ok(child) => child,
                    Err(e) => {
                        leash.end().await;
                        note(format_args!("cannot run `{shown}`: {e}"));
                        drop(term);
                        let code = if e.kind() == io::ErrorKind::NotFound {
                            COMMAND_NOT_FOUND
                        } else {
                            CANNOT_EXECUTE
                        };
                        return leave(&member, code).await;
                    }
                };
                let started = tokio::time::Instant::now();
                note(format_args!(
                    "master with epoch {epoch}: started `{shown}` (pid {}, leash {group})",
                    child.id().map_or_else(|| "?".to_owned(), |p| p.to_string())
                ));
                let end = tokio::select! {
                    biased;
                    signal = stop.requested() => End::Stop(signal),
                    _ = term.cancelled() => End::TermEnded,
                    status = child.wait() => End::Exited(status),
                    _ = leash.exited() => End::LeashEnded,
                };
                // A command killed by its leash is not a command that exited.
                let end = match end {
                    End::Exited(_) | End::TermEnded if leash.has_exited() => End::LeashEnded,
                    end => end,
                };
                match end {
                    End::Exited(status) => {
                        // Whatever it left in its group goes with it.
                        leash.end().await;
                        let code = match &status {
                            Ok(status) => exit_code(*status),
                            Err(_) => RUN_FAILED,
                        };
                        let shown_status = status
                            .as_ref()
                            .map_or_else(|e| e.to_string(), |s| s.to_string());
                        if args.restart && term.is_valid() {
                            note(format_args!(
                                "`{shown}` exited ({shown_status}); starting it again (--restart)"
                            ));
                            tokio::select! {
                                _ = tokio::time::sleep_until(started + RESTART_PAUSE) => {}
                                _ = term.cancelled() => {}
                                signal = stop.requested() => {
                                    note(format_args!("{signal}: releasing the lease"));
                                    drop(term);
                                    return leave(&member, OK).await;
                                }
                            }
                            if term.is_valid() {
                                continue;
                            }
                        }
                        if args.restart {
                            note(format_args!("`{shown}` exited ({shown_status}) as the term ended; waiting for the next term"));
                            drop(term);
                            break;
                        }
                        note(format_args!(
                            "`{shown}` exited ({shown_status}); releasing the lease"
                        ));
                        drop(term);
                        return leave(&member, code).await;
                    }
                    End::LeashEnded => {
                        // The leash is reaped: only a command not reaped yet still
                        // holds the group's id for a kill.
                        if matches!(child.try_wait(), Ok(None)) {
                            kill_now(&mut child, group).await;
                        }
                        leash.end().await;
                        if term.is_valid() {
                            note(format_args!(
                                "the leash of `{shown}` ended while the lease is still valid (its deadline passed before this supervisor saw the renewal, or it was killed): killed `{shown}`; starting it again under a new leash"
                            ));
                        } else {
                            note(format_args!(
                                "the leash killed `{shown}` at the lease's deadline: this supervisor did not renew in time (it was stopped, starved or blocked); waiting for the next term"
                            ));
                        }
                        drop(term);
                        break;
                    }
                    End::TermEnded if member.is_master() => {
                        note(format_args!(
                            "asked to step down: stopping `{shown}`, then handing the lease over"
                        ));
                        stop_gracefully(&mut child, group, args.grace, &term, &member).await;
                        leash.end().await;
                        drop(term);
                        break;
                    }
                    End::TermEnded => {
                        kill_now(&mut child, group).await;
                        leash.end().await;
                        note(format_args!(
                            "the lease was lost: killed `{shown}`; waiting for the next term"
                        ));
                        drop(term);
                        break;
                    }
                    End::Stop(signal) => {
                        note(format_args!(
                            "{signal}: stopping `{shown}`, then releasing the lease"
                        ));
                        stop_gracefully(&mut child, group, args.grace, &term, &member).await;
                        leash.end().await;
                        drop(term);
                        return leave(&member, OK).await;
                    }
                }
            }
        }
    }

    /// Reports an error of the library with a hint at what to fix.
    fn fail(error: &failover::Error) {
        for line in crate::failure_lines(error) {
            note(format_args!("{line}"));
        }
    }

    /// Shuts the member down (releasing a lease it holds) and returns `code`.
    async fn leave(member: &Member, code: u8) -> u8 {
        if let Err(e) = member.shutdown().await {
            note(format_args!("{e}"));
        }
        code
    }

    /// Starts the command in process group `group` (its leash's), killed by the
    /// kernel if this process dies.
    fn spawn(args: &RunArgs, member: &Member, epoch: u64, group: u32) -> io::Result<Child> {
        let (program, rest) = args
            .command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command"))?;
        let group = i32::try_from(group).map_err(io::Error::other)?;
        let mut command = Command::new(program);
        command
            .args(rest)
            .env("FAILOVER_EPOCH", epoch.to_string())
            .env("FAILOVER_SUBSYSTEM", &args.name)
            .env("FAILOVER_MEMBER", member.member_id())
            .process_group(group)
            .kill_on_drop(true);
        let parent = rustix::process::getpid();
        // SAFETY: the closure runs in the child between fork and exec and only
        // makes async-signal-safe system calls (prctl, getppid); it allocates
        // nothing.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // The supervisor died before the death signal was set.
                if rustix::process::getppid() != Some(parent) {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        command.spawn()
    }

    /// SIGTERM to the group; waits for the command up to `grace` while the lease
    /// is still valid; then SIGKILL to the group. The term is held meanwhile, so
    /// the lease is not released before the command is gone.
    async fn stop_gracefully(
        child: &mut Child,
        group: u32,
        grace: Duration,
        _term: &Leadership,
        member: &Member,
    ) {
        signal_group(group, Signal::TERM);
        let lease_lost = async {
            while member.is_master() {
                tokio::time::sleep(LEASE_CHECK).await;
            }
        };
        tokio::select! {
            _ = child.wait() => {}
            _ = tokio::time::sleep(grace) => {
                note(format_args!("the command did not stop within --grace {grace:?}: killing it"));
            }
            _ = lease_lost => {
                note(format_args!("the lease ran out while the command was stopping: killing it"));
            }
        }
        kill_now(child, group).await;
    }

    /// SIGKILL to the group (the leash too), and waits for the command.
    async fn kill_now(child: &mut Child, group: u32) {
        signal_group(group, Signal::KILL);
        let _ = child.kill().await;
    }

    /// Sends `signal` to the process group `group` (the leash's pid). ESRCH (the
    /// group is gone) is fine.
    fn signal_group(group: u32, signal: Signal) {
        let Some(pgid) = i32::try_from(group).ok().and_then(Pid::from_raw) else {
            return;
        };
        if pgid.as_raw_nonzero().get() <= 1 {
            return;
        }
        let _ = kill_process_group(pgid, signal);
    }

    /// The shell's convention: the exit code, or 128 + the signal that killed it.
    fn exit_code(status: ExitStatus) -> u8 {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(RUN_FAILED),
            (None, Some(signal)) => u8::try_from(128 + (signal & 0x7f)).unwrap_or(RUN_FAILED),
            (None, None) => RUN_FAILED,
        }
    }
}
