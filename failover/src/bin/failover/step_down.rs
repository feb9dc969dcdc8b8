//! `failover step-down NAME [--wait] [--timeout DUR]`.

use std::time::Duration;

use failover::{LeaseState, Options};

use crate::{fail, holder, FAILED, NOT_FOUND, OK, TIMED_OUT};

/// How often `--wait` reads the lease.
const POLL: Duration = Duration::from_millis(100);

/// Asks the master to step down; with `wait`, returns once a new epoch began.
pub async fn run(options: &Options, name: &str, wait: bool, timeout: Duration) -> u8 {
    let asked = match failover::step_down(options, name).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            eprintln!(
                "failover: nobody holds the lease of {name:?} (no lease, or it was released): nothing to step down"
            );
            return NOT_FOUND;
        }
        Err(e) => return fail(&e),
    };
    if asked.state == LeaseState::Expired {
        eprintln!(
            "failover: the lease of {name:?} has expired: its holder stopped renewing, and a standby takes it at its next check"
        );
    }
    println!(
        "asked {} (epoch {}) to step down from {name}",
        holder(&asked),
        asked.epoch
    );
    if !wait {
        return OK;
    }
    let mut changes = match failover::watch(options, name, POLL).await {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let waited = tokio::time::timeout(timeout, async {
        loop {
            match changes.next().await {
                Some(Ok(info)) if info.epoch > asked.epoch && info.state == LeaseState::Held => {
                    return Ok(info)
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => eprintln!("failover: {e} (still waiting)"),
                None => return Err(()),
            }
        }
    })
    .await;
    match waited {
        Ok(Ok(info)) => {
            println!("new master {} (epoch {})", holder(&info), info.epoch);
            OK
        }
        Ok(Err(())) => {
            eprintln!("failover: the watch ended unexpectedly");
            FAILED
        }
        Err(_) => {
            eprintln!(
                "failover: no new epoch of {name:?} within {timeout:?}; is a standby running? (raise --timeout, or check `failover status {name}`)"
            );
            TIMED_OUT
        }
    }
}
