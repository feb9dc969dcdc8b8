//! `failover status [NAME] [--json]`.

use failover::{LeaderInfo, Options};

use crate::{expiry, fail, holder, json, FAILED, NOT_FOUND, OK};

/// Prints the leases (all, or NAME's) as a table or as JSON lines.
pub async fn run(options: &Options, name: Option<&str>, as_json: bool) -> u8 {
    let leases = match name {
        Some(name) => match failover::status(options, name).await {
            Ok(Some(info)) => vec![info],
            Ok(None) => {
                eprintln!(
                    "failover: subsystem {name:?} has no lease in this collection (check the name, --database and --collection)"
                );
                return NOT_FOUND;
            }
            Err(e) => return fail(&e),
        },
        None => match failover::list(options).await {
            Ok(leases) => leases,
            Err(e) => return fail(&e),
        },
    };
    if as_json {
        for info in &leases {
            match serde_json::to_string(&json(info)) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("failover: cannot print the status as JSON: {e}");
                    return FAILED;
                }
            }
        }
    } else if leases.is_empty() {
        eprintln!("failover: no subsystem has a lease in this collection");
    } else {
        print!("{}", table(&leases));
    }
    OK
}

/// The leases as an aligned table.
fn table(leases: &[LeaderInfo]) -> String {
    let header = [
        "NAME",
        "HOLDER",
        "EPOCH",
        "STATE",
        "EXPIRES IN",
        "LAST SYNC",
        "QUEUE",
        "STEP-DOWN",
    ];
    let rows: Vec<[String; 8]> = leases
        .iter()
        .map(|i| {
            [
                i.name.clone(),
                holder(i).to_owned(),
                i.epoch.to_string(),
                i.state.to_string(),
                expiry(i),
                i.sync
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                i.queue_depth
                    .map_or_else(|| "-".to_owned(), |d| d.to_string()),
                if i.step_down { "requested" } else { "-" }.to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}
