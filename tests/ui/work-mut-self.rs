use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs { done: u64 }

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&mut self, job: &Job) -> bool { self.done += 1; job.id > 0 }
}

fn main() {}
