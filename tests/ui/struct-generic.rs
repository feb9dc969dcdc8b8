#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs<T> { store: T }

fn main() {}
