//! `failover watch NAME [--json] [--interval DUR]`.

use std::time::Duration;

use failover::{LeaderInfo, LeaseState, Options};

use crate::{fail, holder, json, FAILED, OK};

/// What changed between two readings of a lease.
fn change(before: Option<&LeaderInfo>, now: &LeaderInfo) -> &'static str {
    match before {
        None => "initial",
        Some(b) if b.holder != now.holder => "new-holder",
        Some(b) if b.epoch != now.epoch => "new-epoch",
        Some(b) if b.state != now.state => match now.state {
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Vacant => "vacant",
            _ => "held",
        },
        Some(_) if now.step_down => "step-down",
        Some(_) => "changed",
    }
}

/// The line for people.
fn describe(change: &str, info: &LeaderInfo) -> String {
    let who = format!("{} (epoch {})", holder(info), info.epoch);
    match (change, info.state) {
        (_, LeaseState::Released) => format!("released by {who}"),
        (_, LeaseState::Expired) => format!("expired: {who} stopped renewing"),
        (_, LeaseState::Vacant) => format!(
            "vacant (epoch {}): the lease was found missing or repaired; a standby takes it over once it runs out",
            info.epoch
        ),
        ("new-holder" | "new-epoch", _) => format!("new master {who}"),
        ("step-down", _) => format!("step-down requested of {who}"),
        (_, _) if info.step_down => format!("held by {who}, step-down requested"),
        _ => format!("held by {who}"),
    }
}

/// Prints one line per change until interrupted (exit 0) or the start fails.
pub async fn run(options: &Options, name: &str, as_json: bool, interval: Duration) -> u8 {
    let mut changes = match failover::watch(options, name, interval).await {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let mut last: Option<LeaderInfo> = None;
    loop {
        let next = tokio::select! {
            next = changes.next() => next,
            _ = tokio::signal::ctrl_c() => return OK,
        };
        let info = match next {
            Some(Ok(info)) => info,
            Some(Err(e)) => {
                // The watch goes on; say so once per failure.
                eprintln!("failover: {e} (still watching)");
                continue;
            }
            None => {
                eprintln!("failover: the watch ended unexpectedly");
                return FAILED;
            }
        };
        let what = change(last.as_ref(), &info);
        let at = failover::bson::DateTime::now()
            .try_to_rfc3339_string()
            .unwrap_or_default();
        if as_json {
            let mut object = json(&info);
            object.insert("change".into(), what.into());
            object.insert("at".into(), at.into());
            match serde_json::to_string(&object) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("failover: cannot print the change as JSON: {e}");
                    return FAILED;
                }
            }
        } else {
            println!("{at} {}: {}", info.name, describe(what, &info));
        }
        last = Some(info);
    }
}
