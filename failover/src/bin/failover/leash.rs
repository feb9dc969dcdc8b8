//! The leash of a `failover run` command: a small process that holds the
//! master's deadline on `CLOCK_BOOTTIME` and kills the command when the deadline
//! passes, whether or not the supervisor runs.
//!
//! The supervisor's own runtime kills the command when its term ends, but only
//! while that runtime runs: a supervisor that is stopped (SIGSTOP, Ctrl-Z),
//! starved or blocked does not, and its command would go on after the lease ran
//! out and a standby took over. So every run of the command gets a leash: the
//! same binary, started as `failover __leash DEADLINE`, in a new process group
//! that the command then joins. The leash
//!
//! - holds an absolute deadline on `CLOCK_BOOTTIME` (system-wide, so the two
//!   processes share it, and it counts suspended time) in a timerfd;
//! - reads later deadlines from its stdin, a pipe from the supervisor, which
//!   extends it after each renewal of the lease;
//! - kills its whole process group (the command, what it started there, and
//!   itself) with SIGKILL when the deadline passes, when the pipe closes (the
//!   supervisor exited or was killed, or it ends the run), or on the message 0;
//! - ignores SIGTERM, SIGINT, SIGHUP, SIGQUIT and the job-control stops other than
//!   SIGSTOP, so that the supervisor's SIGTERM to the group for a graceful stop
//!   does not take the leash away; being the group's leader, its pid stays the
//!   group's id while it lives, so its kill never hits a recycled group.
//!
//! The deadlines it gets are never later than the library's own: see [`Feed`].

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use failover::{LeaseState, Member};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{kill_current_process_group, kill_process_group, Pid, Signal};
use rustix::time::{
    clock_gettime, timerfd_create, timerfd_settime, ClockId, Itimerspec, TimerfdClockId,
    TimerfdFlags, TimerfdTimerFlags, Timespec,
};
use tokio::process::{Child, Command};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The hidden subcommand that runs a leash.
pub const SUBCOMMAND: &str = "__leash";

/// This process's binary.
const SELF_EXE: &str = "/proc/self/exe";

/// Now on `CLOCK_BOOTTIME`, in nanoseconds.
pub fn boottime_ns() -> u64 {
    let t = clock_gettime(ClockId::Boottime);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

// ----- the leash process ----------------------------------------------------------

/// The leash's main: holds `deadline_ns` (`CLOCK_BOOTTIME`), extended by the
/// deadlines read from stdin (8 bytes each, little-endian nanoseconds), and kills
/// its process group when it passes or stdin closes. Returns only if even that
/// kill failed.
pub fn serve(deadline_ns: u64) -> u8 {
    let control = io::stdin();
    let control = control.as_fd();
    let Ok(timer) = timerfd_create(TimerfdClockId::Boottime, TimerfdFlags::CLOEXEC) else {
        return kill_group();
    };
    if arm(&timer, deadline_ns).is_err() {
        return kill_group();
    }
    let mut buffer = [0_u8; 512];
    let mut partial: Vec<u8> = Vec::with_capacity(8);
    loop {
        let mut fds = [
            PollFd::new(&control, PollFlags::IN),
            PollFd::new(&timer, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
        if !fds[1].revents().is_empty() {
            // The deadline passed.
            break;
        }
        if fds[0].revents().is_empty() {
            continue;
        }
        match rustix::io::read(control, &mut buffer) {
            // The supervisor is gone, or ended the run.
            Ok(0) => break,
            Ok(n) => {
                partial.extend_from_slice(&buffer[..n]);
                let mut end = false;
                while partial.len() >= 8 {
                    let mut bytes = [0_u8; 8];
                    bytes.copy_from_slice(&partial[..8]);
                    partial.drain(..8);
                    let deadline = u64::from_le_bytes(bytes);
                    if deadline == 0 || arm(&timer, deadline).is_err() {
                        end = true;
                    }
                }
                if end {
                    break;
                }
            }
            Err(Errno::INTR | Errno::AGAIN) => {}
            Err(_) => break,
        }
    }
    kill_group()
}

/// Sets the timer to fire at `deadline_ns` on `CLOCK_BOOTTIME` (at once if past).
fn arm(timer: &OwnedFd, deadline_ns: u64) -> io::Result<()> {
    let at = Timespec {
        tv_sec: i64::try_from(deadline_ns / 1_000_000_000).unwrap_or(i64::MAX),
        tv_nsec: i64::try_from(deadline_ns % 1_000_000_000).unwrap_or(0),
    };
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // A zero it_value would disarm the timer: a deadline of 0 s (never sent) is
    // one nanosecond instead, long past.
    let at = if at.tv_sec == 0 && at.tv_nsec == 0 {
        Timespec {
            tv_sec: 0,
            tv_nsec: 1,
        }
    } else {
        at
    };
    timerfd_settime(
        timer,
        TimerfdTimerFlags::ABSTIME,
        &Itimerspec {
            it_interval: zero,
            it_value: at,
        },
    )?;
    Ok(())
}

/// SIGKILL to the leash's process group: the command, whatever it started in
/// the group, and the leash.
fn kill_group() -> u8 {
    let _ = kill_current_process_group(Signal::KILL);
    crate::RUN_FAILED
}

// ----- the supervisor's side ------------------------------------------------------

/// A running leash, from the supervisor's side.
pub struct Leash {
    process: Child,
    group: u32,
    feed: Arc<Feed>,
    /// The leash was reaped: its pid no longer holds the group's id.
    reaped: bool,
}

impl Leash {
    /// Starts a leash holding `deadline_ns` for the command of term `epoch`, in a
    /// new process group; the command is to join that group ([`Leash::group`]).
    /// Later deadlines of the epoch reach it through `feed`.
    pub fn spawn(feed: &Arc<Feed>, epoch: u64, deadline_ns: u64) -> io::Result<Leash> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // The supervisor never waits on the leash: a stopped leash's full pipe
        // drops deadlines (so it kills early), it does not block the election.
        rustix::io::ioctl_fionbio(&write, true)?;
        // The binary that runs now, even if its file was replaced meanwhile
        // (without /proc: the path it was started from).
        let exe = if std::path::Path::new(SELF_EXE).exists() {
            std::path::PathBuf::from(SELF_EXE)
        } else {
            std::env::current_exe()?
        };
        let mut command = Command::new(exe);
        command
            .arg(SUBCOMMAND)
            .arg(deadline_ns.to_string())
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: the closure runs in the child between fork and exec and only
        // calls signal(2), which is async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(|| {
                // Ignored dispositions survive exec: the leash ignores these from
                // its first instruction on (the supervisor's SIGTERM to the group
                // is for the command).
                for signal in [
                    libc::SIGTERM,
                    libc::SIGINT,
                    libc::SIGHUP,
                    libc::SIGQUIT,
                    libc::SIGTSTP,
                    libc::SIGTTIN,
                    libc::SIGTTOU,
                    libc::SIGPIPE,
                ] {
                    if libc::signal(signal, libc::SIG_IGN) == libc::SIG_ERR {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let process = command.spawn()?;
        // The read end goes with the command (the child has its copy).
        drop(command);
        let group = process
            .id()
            .ok_or_else(|| io::Error::other("the leash exited at once"))?;
        feed.attach(epoch, write);
        Ok(Leash {
            process,
            group,
            feed: feed.clone(),
            reaped: false,
        })
    }

    /// The process group of the leash, for the command to join and to signal.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// Resolves when the leash has exited: it killed its group (the deadline
    /// passed), or somebody killed it. Cancel-safe.
    pub async fn exited(&mut self) {
        let _ = self.process.wait().await;
        self.reaped = true;
    }

    /// Whether the leash has exited.
    pub fn has_exited(&mut self) -> bool {
        self.reaped = self.reaped || !matches!(self.process.try_wait(), Ok(None));
        self.reaped
    }

    /// Ends the run: SIGKILL to what is left of the group, the leash included
    /// (from here rather than by the leash, which may be stopped), and reaps the
    /// leash. Until it is reaped, the leash's pid is the group's id: no other
    /// group can have it.
    pub async fn end(mut self) {
        self.feed.detach();
        // A reaped leash's pid may name another group by now.
        if !self.reaped {
            if let Some(pgid) = i32::try_from(self.group).ok().and_then(Pid::from_raw) {
                let _ = kill_process_group(pgid, Signal::KILL);
            }
        }
        let _ = self.process.wait().await;
    }
}

// ----- the deadlines --------------------------------------------------------------

/// The master's deadlines on `CLOCK_BOOTTIME`, learnt from the election's
/// tracing spans, and the pipe to the leash of the current run.
///
/// The library renews the lease inside its `renew` span (and, during a hand-over,
/// inside its `release` span), takes it inside its `take_over` span, and judges
/// its deadline as `sent + lease − margin`, where `sent` is when it sent the write,
/// read inside the span. A [`DeadlineLayer`] sees those spans on the election's
/// own thread, in order with its work, and after each poll of one of them it
/// reads [`Member::leader`]: a lease of this member with a newer stamp than the
/// last one means a renewal (or take-over) succeeded, and its write was sent no
/// earlier than `since`, the moment noted for it:
///
/// - the creation of a `renew` or `take_over` span (each renewal or take-over of
///   the election loop has its own, created just before it);
/// - in a `release` span (a hand-over renews in one loop), the first poll after
///   the renewal before was seen; or that very poll, when the renewal before took
///   longer than the renewal interval, because the next one may then be sent in
///   the same poll.
///
/// The deadline handed to the leash is `since + lease − margin`: never later than
/// the library's, and behind it only by the instant between `since` and `sent`.
pub struct Feed {
    /// `lease − margin`: how long after sending a renewal the master may act.
    valid: Duration,
    /// How long after sending a renewal the election sends the next one.
    renew_every: Duration,
    member: OnceLock<Arc<Member>>,
    state: Mutex<FeedState>,
    /// The newest `(epoch, deadline)`.
    newest: tokio::sync::watch::Sender<Option<(u64, u64)>>,
}

#[derive(Default)]
struct FeedState {
    /// No renewal seen since this moment was noted: the next one was sent after it.
    since: Option<u64>,
    /// The moment the current poll began.
    poll_began: Option<u64>,
    /// The `since` of the last renewal seen.
    last_since: Option<u64>,
    /// The last renewal seen: epoch and stamp.
    last: Option<(u64, i64)>,
    /// The leash of the current run and its epoch.
    leash: Option<(u64, OwnedFd)>,
    /// The newest deadline and its epoch.
    newest: Option<(u64, u64)>,
}

impl Feed {
    /// A feed for a member with lease `lease`, renewed every `renew_every`.
    pub fn new(lease: Duration, renew_every: Duration) -> Arc<Feed> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let valid = Duration::from_millis(failover::lease::rules::master_deadline(0, lease_ms));
        Arc::new(Feed {
            valid,
            renew_every,
            member: OnceLock::new(),
            state: Mutex::new(FeedState::default()),
            newest: tokio::sync::watch::channel(None).0,
        })
    }

    /// The member whose renewals to follow.
    pub fn follow(&self, member: Arc<Member>) {
        let _ = self.member.set(member);
    }

    fn state(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deadline of term `epoch`, once it is later than now plus `ahead`;
    /// waits for the next renewal otherwise. Cancel-safe.
    pub async fn deadline(&self, epoch: u64, ahead: Duration) -> u64 {
        let mut newest = self.newest.subscribe();
        loop {
            if let Some((e, deadline)) = *newest.borrow_and_update() {
                let ahead = u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX);
                if e == epoch && deadline > boottime_ns().saturating_add(ahead) {
                    return deadline;
                }
            }
            if newest.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The leash of the run of term `epoch`: it gets the deadlines from now on,
    /// starting with the newest if it is of this epoch.
    fn attach(&self, epoch: u64, pipe: OwnedFd) {
        let mut state = self.state();
        if let Some((_, deadline)) = state.newest.filter(|(e, _)| *e == epoch) {
            send(&pipe, deadline);
        }
        state.leash = Some((epoch, pipe));
    }

    /// Closes the pipe to the leash.
    fn detach(&self) {
        self.state().leash = None;
    }

    /// A span of the election was created.
    fn created(&self, name: &str) {
        if name == "renew" || name == "take_over" || name == "release" {
            self.state().since = Some(boottime_ns());
        }
    }

    /// A poll of a span of the election begins.
    fn entered(&self) {
        let now = boottime_ns();
        let mut state = self.state();
        state.poll_began = Some(now);
        state.since.get_or_insert(now);
    }

    /// A poll of a span of the election ends: a renewal that succeeded in it is
    /// seen now.
    fn exited(&self, name: &str) {
        let Some(member) = self.member.get() else {
            return;
        };
        let Some(info) = member.leader() else {
            return;
        };
        if info.holder.as_deref() != Some(member.member_id())
            || info.state == LeaseState::Released
            || member.epoch() != Some(info.epoch)
            || !member.is_master()
        {
            return;
        }
        let stamp = (info.epoch, info.renewed_at.timestamp_millis());
        let now = boottime_ns();
        let mut state = self.state();
        if state.last.is_some_and(|last| last >= stamp) {
            return;
        }
        let Some(since) = state.since else {
            return;
        };
        let deadline = since.saturating_add(u64::try_from(self.valid.as_nanos()).unwrap_or(0));
        state.last = Some(stamp);
        state.last_since = Some(since);
        state.newest = Some((info.epoch, deadline));
        // The next renewal's moment: see the type's documentation.
        let late = since.saturating_add(u64::try_from(self.renew_every.as_nanos()).unwrap_or(0));
        state.since = if name == "release" && now >= late {
            state.poll_began
        } else {
            None
        };
        if let Some((_, pipe)) = state.leash.as_ref().filter(|(e, _)| *e == info.epoch) {
            send(pipe, deadline);
        }
        drop(state);
        self.newest.send_replace(Some((info.epoch, deadline)));
    }
}

/// Writes a deadline to a leash's pipe without blocking (a full pipe: the leash is
/// stopped; it keeps the older deadline and kills early).
fn send(pipe: &OwnedFd, deadline: u64) {
    let _ = rustix::io::write(pipe, &deadline.to_le_bytes());
}

/// The tracing layer that feeds a [`Feed`] from the election's spans.
pub struct DeadlineLayer(pub Arc<Feed>);

fn watched(meta: &Metadata<'_>) -> bool {
    meta.is_span()
        && meta.target() == "failover"
        && matches!(meta.name(), "renew" | "take_over" | "release")
}

impl<S> Layer<S> for DeadlineLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if watched(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        watched(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        if watched(attrs.metadata()) {
            self.0.created(attrs.metadata().name());
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if ctx.metadata(id).is_some_and(watched) {
            self.0.entered();
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(meta) = ctx.metadata(id).filter(|m| watched(m)) {
            self.0.exited(meta.name());
        }
    }
}
