//! The design card: a key field, an async `#[work]` method with the context, hooks.
use failover::{Outcome, WorkContext};
use serde::Serialize;

#[derive(Serialize)]
struct Invoice {
    id: u64,
    amount: u64,
}

struct Ledger;

#[failover::subsystem(name = "billing", key = "id")]
struct Billing {
    ledger: Ledger,
}

#[failover::subsystem]
impl Billing {
    #[work]
    async fn charge(&self, invoice: &Invoice, ctx: &WorkContext) -> Outcome {
        let _ = (&self.ledger, invoice.amount, ctx.epoch());
        Outcome::Done
    }

    #[on_master]
    async fn leading(&self, epoch: u64) {
        let _ = epoch;
    }
}

fn assert_subsystem<S: failover::Subsystem<Task = Invoice, Key = failover::bson::Bson>>() {}

fn main() {
    assert_subsystem::<Billing>();
    assert_eq!(<Billing as failover::Subsystem>::NAME, "billing");
    let _ = async {
        let store = failover::MemoryStore::new();
        let billing: failover::Managed<Billing> = Billing { ledger: Ledger }
            .start(failover::Options::new().in_memory(&store))
            .await?;
        billing.submit_work(Invoice { id: 1, amount: 10 }).await?;
        billing.shutdown().await;
        Ok::<(), failover::Error>(())
    };
}
