use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

// Three mistakes in the arguments, three in the impl block: all six are reported.
#[failover::subsystem(name = " jobs", keys = "id", crate = 5)]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    fn run(&mut self, job: &Job) -> bool { job.id > 0 }

    #[on_master]
    async fn leading(&self) {}

    #[on_slave]
    async fn following(&self, epoch: u64) -> u64 { epoch }
}

fn main() {}
