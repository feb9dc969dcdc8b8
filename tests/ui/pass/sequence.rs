//! `sequence = "field"`: the task's feed sequence number, from an integer field.
use serde::Serialize;

#[derive(Serialize)]
struct Job {
    customer: String,
    offset: i64,
}

#[failover::subsystem(name = "jobs", key = "customer", sequence = "offset")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool {
        !job.customer.is_empty()
    }
}

fn main() {
    use failover::Work;
    let job = Job {
        customer: "ada".into(),
        offset: 7,
    };
    assert_eq!(Jobs.sequence(&job), Some(7));
}
