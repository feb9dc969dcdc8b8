use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs;

#[failover::subsystem]
impl failover::Hooks for Jobs {}

fn main() {}
