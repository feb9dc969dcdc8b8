//! The supervisor's messages on stderr, written by a thread of their own so that
//! a stderr that nobody reads (a full pipe) never blocks the runtime that runs
//! the election: a line that does not fit in the queue is dropped and counted,
//! and the count is reported once stderr moves again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines waiting for stderr at most; more are dropped (and counted).
const QUEUE: usize = 256;

struct Log {
    queue: SyncSender<String>,
    /// Lines queued and not yet written.
    pending: AtomicUsize,
    /// Lines dropped since the last report.
    dropped: AtomicU64,
}

static LOG: OnceLock<Option<Log>> = OnceLock::new();

fn log() -> Option<&'static Log> {
    LOG.get_or_init(|| {
        let (queue, lines) = sync_channel::<String>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || {
                let mut stderr = std::io::stderr();
                for line in lines {
                    let _ = stderr.write_all(line.as_bytes());
                    if let Some(log) = LOG.get().and_then(Option::as_ref) {
                        log.pending.fetch_sub(1, Ordering::AcqRel);
                        let dropped = log.dropped.swap(0, Ordering::AcqRel);
                        if dropped > 0 {
                            let _ = writeln!(
                                stderr,
                                "failover: {dropped} messages dropped (stderr was not read fast enough)"
                            );
                        }
                    }
                }
            });
        spawned.ok().map(|_| Log {
            queue,
            pending: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        })
    })
    .as_ref()
}

/// Writes `failover: {message}` to stderr without ever blocking: queued for the
/// writer thread, or dropped (and counted) when the queue is full.
pub fn note(message: std::fmt::Arguments<'_>) {
    let line = format!("failover: {message}\n");
    let Some(log) = log() else {
        // No thread for stderr: better no message than a blocked election.
        return;
    };
    log.pending.fetch_add(1, Ordering::AcqRel);
    match log.queue.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            log.pending.fetch_sub(1, Ordering::AcqRel);
            log.dropped.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Gives the writer thread up to `limit` to write what is queued (before the
/// process exits); returns early once everything is written.
pub fn flush(limit: Duration) {
    let Some(log) = LOG.get().and_then(Option::as_ref) else {
        return;
    };
    let end = Instant::now() + limit;
    while log.pending.load(Ordering::Acquire) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
}
