//! `key_fn`, a `Result<bool, E>` return, no context, a unit struct.
use serde::Serialize;

#[derive(Serialize)]
struct Order {
    region: String,
    number: u32,
}

fn order_key(order: &Order) -> String {
    format!("{}-{}", order.region, order.number)
}

#[failover::subsystem(name = "orders", key_fn = order_key)]
struct Orders;

#[failover::subsystem]
impl Orders {
    #[work]
    async fn ship(&self, order: &Order) -> Result<bool, std::io::Error> {
        Ok(order.number > 0)
    }
}

// The key function may also be given as a string, as serde's `with`.
#[failover::subsystem(name = "orders-2", key_fn = "order_key")]
struct Orders2;

#[failover::subsystem]
impl Orders2 {
    #[work]
    async fn ship(&self, order: &Order) -> Result<(), String> {
        if order.number > 0 { Ok(()) } else { Err("no number".into()) }
    }
}

fn main() {
    use failover::Work;
    let order = Order { region: "eu".into(), number: 7 };
    assert_eq!(Orders.key(&order), failover::bson::Bson::String("eu-7".into()));
    assert_eq!(Orders2.key(&order), failover::bson::Bson::String("eu-7".into()));
}
