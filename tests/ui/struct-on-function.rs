#[failover::subsystem(name = "jobs", key = "id")]
fn jobs() {}

fn main() {}
