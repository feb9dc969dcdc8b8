//! A key inside a nested field, a tuple struct's field, a raw identifier.
use serde::Serialize;

#[derive(Serialize)]
struct Customer {
    id: String,
}

#[derive(Serialize)]
struct Invoice {
    customer: Customer,
    r#type: u8,
}

#[derive(Serialize)]
struct Pair(u32, u32);

#[failover::subsystem(name = "by-customer", key = "customer.id")]
struct ByCustomer;

#[failover::subsystem]
impl ByCustomer {
    #[work]
    async fn run(&self, _invoice: &Invoice) -> bool {
        true
    }
}

#[failover::subsystem(name = "by-type", key = "r#type")]
struct ByType;

#[failover::subsystem]
impl ByType {
    #[work]
    async fn run(&self, _invoice: &Invoice) -> bool {
        true
    }
}

#[failover::subsystem(name = "pairs", key = "1")]
struct Pairs;

#[failover::subsystem]
impl Pairs {
    #[work]
    async fn run(&self, _pair: &Pair) {}
}

fn main() {
    use failover::bson::Bson;
    use failover::Work;
    let invoice = Invoice { customer: Customer { id: "c1".into() }, r#type: 3 };
    assert_eq!(ByCustomer.key(&invoice), Bson::String("c1".into()));
    assert_eq!(ByType.key(&invoice), Bson::Int32(3));
    assert_eq!(Pairs.key(&Pair(1, 2)), Bson::Int64(2));
}
