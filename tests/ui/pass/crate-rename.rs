//! `crate = "..."` for a dependency known under another name.
extern crate failover as fo;

use serde::Serialize;

#[derive(Serialize)]
struct Job {
    id: u64,
}

#[fo::subsystem(name = "renamed", key = "id", crate = "fo")]
struct Renamed;

#[fo::subsystem(crate = "fo")]
impl Renamed {
    #[work]
    async fn run(&self, job: &Job, ctx: &fo::WorkContext) -> bool {
        job.id > ctx.epoch()
    }

    #[fo::on_master]
    fn leading(&self, _epoch: u64) {}
}

fn main() {
    assert_eq!(<Renamed as fo::Subsystem>::NAME, "renamed");
}
