use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[on_master]
    async fn leading(&self, epoch: u64) { let _ = epoch; }
}

fn main() {}
