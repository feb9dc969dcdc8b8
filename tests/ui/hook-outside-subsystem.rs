use failover::on_master;

struct Jobs;

impl Jobs {
    #[on_master]
    async fn leading(&self, epoch: u64) { let _ = epoch; }
}

fn main() {}
