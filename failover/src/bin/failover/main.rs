//! `failover`: operate the subsystems of a lease collection from a shell: who
//! leads (`status`, `watch`), hand over on purpose (`step-down`), and run any
//! program as a singleton under failover (`run`). See `failover --help`.

#[cfg(any(target_os = "linux", target_os = "android"))]
mod leash;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod log;
mod run;
mod status;
mod step_down;
mod watch;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use failover::{LeaderInfo, LeaseState, Options, DEFAULT_COLLECTION, DEFAULT_CONNECT_STRING};

/// Exit status: success.
pub const OK: u8 = 0;
/// Exit status: the database failed or could not be reached, or the input was
/// refused (the message says what to fix).
pub const FAILED: u8 = 1;
/// Exit status: nothing to report or ask: no such subsystem, or nobody holds its
/// lease (`status NAME`, `step-down NAME`).
pub const NOT_FOUND: u8 = 3;
/// Exit status: `step-down --wait` saw no new epoch within `--timeout`.
pub const TIMED_OUT: u8 = 4;
/// Exit status of `run` when `failover` itself failed (the child's statuses are
/// passed through, so its own are out of their usual range).
pub const RUN_FAILED: u8 = 125;
/// Exit status of `run` when the command exists but cannot be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// Exit status of `run` when the command is not found.
pub const COMMAND_NOT_FOUND: u8 = 127;

const AFTER_HELP: &str = "\
Examples:
  failover status                              # every subsystem in the collection
  failover status billing --json               # one JSON object per line
  failover watch billing                       # one line per change, until Ctrl-C
  failover step-down billing --wait            # hand over; return once a new epoch began
  failover run --name billing -- ./billing-worker --port 8080

Exit status:
  0    success
  1    the database failed or could not be reached, or bad input (the message says what to fix)
  2    bad usage (unknown option, missing argument)
  3    no such subsystem, or nobody holds its lease (status NAME, step-down NAME)
  4    step-down --wait: no new epoch within --timeout
  run: the command's own exit status; 128+N when a signal N killed it; 0 when the
       supervisor was stopped by SIGTERM, SIGINT or SIGHUP; 125 when failover itself
       failed; 126 when the command cannot be executed; 127 when it is not found

The connection string's credentials are never printed.";

/// Operate failover subsystems: leader status, changes, step-down, and running a
/// program only while this process is master.
#[derive(Debug, Parser)]
#[command(name = "failover", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    db: Db,
    #[command(subcommand)]
    command: Command,
}

/// Where the leases are.
#[derive(Debug, Args)]
struct Db {
    /// MongoDB connection string
    #[arg(long, env = "MONGODB_URI", hide_env_values = true, global = true,
          default_value = DEFAULT_CONNECT_STRING, hide_default_value = true)]
    uri: String,
    /// Database of the lease collection [default: the connection string's, else `test`]
    #[arg(long, global = true)]
    database: Option<String>,
    /// The lease collection
    #[arg(long, global = true, default_value = DEFAULT_COLLECTION)]
    collection: String,
    /// How long to wait for the database
    #[arg(long, global = true, default_value = "5s", value_parser = duration)]
    connect_timeout: Duration,
}

impl Db {
    fn options(&self) -> Options {
        let mut options = Options::new()
            .connect_string(&self.uri)
            .collection(&self.collection)
            .connect_timeout(self.connect_timeout);
        if let Some(db) = &self.database {
            options = options.database(db);
        }
        options
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show who holds the lease of each subsystem (or of NAME)
    #[command(after_help = "\
Columns: name, holder (member id), epoch (fencing token), state (held / expired /
released, judged on the clock of the database node that stamps the lease), expires in,
last synchronize id, step-down (requested and not yet done).

Examples:
  failover status
  failover status billing --json")]
    Status {
        /// Only this subsystem (exit status 3 when it has no lease)
        name: Option<String>,
        /// One JSON object per subsystem and line: name, holder, epoch, state,
        /// expires_in_ms, renewed_at, lease_ms, sync, step_down, version
        #[arg(long)]
        json: bool,
    },
    /// Print one line per change of a subsystem's lease (new holder, new epoch,
    /// release, expiry, step-down request) until interrupted
    #[command(after_help = "\
Example:
  $ failover watch billing
  2026-11-26T19:02:11.201Z billing: held by host-a:411 (epoch 1764183600123)
  2026-11-26T19:02:30.877Z billing: step-down requested of host-a:411 (epoch 1764183600123)
  2026-11-26T19:02:31.412Z billing: released by host-a:411 (epoch 1764183600123)
  2026-11-26T19:02:33.020Z billing: new master host-b:978 (epoch 1764183600124)")]
    Watch {
        /// The subsystem
        name: String,
        /// One JSON object per change and line (the status fields and `change`)
        #[arg(long)]
        json: bool,
        /// How often to read the lease (it is also read when it is due to run out)
        #[arg(long, default_value = "500ms", value_parser = duration)]
        interval: Duration,
    },
    /// Ask the master of NAME to hand over gracefully: it stops its work, releases
    /// the lease, and a standby takes over at its next check
    #[command(after_help = "\
The request is a new version of the lease with a step-down flag: it breaks no lease;
the master acts on it at its next renewal. A master stepped down lets the standbys go
first for one lease.

Examples:
  failover step-down billing
  failover step-down billing --wait --timeout 30s")]
    StepDown {
        /// The subsystem
        name: String,
        /// Return only once a new epoch has begun (exit status 4 after --timeout)
        #[arg(long)]
        wait: bool,
        /// How long --wait waits
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: Duration,
    },
    /// Run a command only while this process is master of NAME
    Run(run::RunArgs),
    /// The leash of a `run` command (started by `run` itself): holds the
    /// deadline DEADLINE (CLOCK_BOOTTIME, nanoseconds) and later ones read from
    /// stdin, and kills its process group when it passes or stdin closes
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[command(name = "__leash", hide = true)]
    Leash {
        /// The first deadline
        deadline: u64,
    },
}

/// Parses `500ms`, `10s`, `2m`, `1h 30m`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 500ms, 10s or 2m"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The leash needs no runtime: it waits in poll(2) and must start at once.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Command::Leash { deadline } = cli.command {
        return ExitCode::from(leash::serve(deadline));
    }
    // One thread: the election and the supervisor run on the main thread, which
    // lives as long as the process (a child's death signal follows the thread
    // that forked it).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("failover: cannot start the async runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let options = cli.db.options();
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Status { name, json } => status::run(&options, name.as_deref(), json).await,
            Command::Watch {
                name,
                json,
                interval,
            } => watch::run(&options, &name, json, interval).await,
            Command::StepDown {
                name,
                wait,
                timeout,
            } => step_down::run(&options, &name, wait, timeout).await,
            Command::Run(args) => run::run(options, args).await,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Command::Leash { .. } => FAILED,
        }
    });
    ExitCode::from(code)
}

// ----- shared by the subcommands ------------------------------------------------

/// Reports an error of the library with a hint at what to fix; returns [`FAILED`].
fn fail(error: &failover::Error) -> u8 {
    for line in failure_lines(error) {
        eprintln!("failover: {line}");
    }
    FAILED
}

/// An error of the library, and a hint at what to fix.
fn failure_lines(error: &failover::Error) -> Vec<String> {
    let mut lines = vec![error.to_string()];
    match error {
        failover::Error::Database { .. } | failover::Error::Timeout { .. } => lines.push(
            "check --uri (or MONGODB_URI), --database and --collection, and that the database is up"
                .to_owned(),
        ),
        failover::Error::MalformedLease { .. } => lines.push(
            "repair the lease with failover::repair_lease, or ask its writer".to_owned(),
        ),
        _ => {}
    }
    lines
}

/// A duration for people: `850ms`, `2.1s`, `3m 20s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// When the lease runs out, for people.
fn expiry(info: &LeaderInfo) -> String {
    let ms = Duration::from_millis(info.expires_in_ms.unsigned_abs());
    match info.state {
        LeaseState::Held | LeaseState::Vacant => human(ms),
        LeaseState::Expired => format!("{} ago", human(ms)),
        _ => "-".to_owned(),
    }
}

/// The holder, for people.
fn holder(info: &LeaderInfo) -> &str {
    info.holder.as_deref().unwrap_or("-")
}

/// One lease as a JSON object (one line of `--json`).
fn json(info: &LeaderInfo) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("name".into(), info.name.clone().into());
    map.insert("holder".into(), info.holder.clone().into());
    map.insert("epoch".into(), info.epoch.into());
    map.insert("state".into(), info.state.as_str().into());
    map.insert("expires_in_ms".into(), info.expires_in_ms.into());
    map.insert(
        "renewed_at".into(),
        info.renewed_at.try_to_rfc3339_string().ok().into(),
    );
    map.insert(
        "lease_ms".into(),
        u64::try_from(info.lease.as_millis())
            .unwrap_or(u64::MAX)
            .into(),
    );
    map.insert(
        "sync".into(),
        info.sync
            .clone()
            .map_or(serde_json::Value::Null, |s| s.into_relaxed_extjson()),
    );
    map.insert("step_down".into(), info.step_down.into());
    map.insert("version".into(), info.version.into());
    map.insert("queue_depth".into(), info.queue_depth.into());
    map
}

/// The command line of a child, for messages.
fn command_line(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
