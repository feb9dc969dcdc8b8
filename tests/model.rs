//! Placeholder while the model is written.
#[test]
fn placeholder() {
    let _ = failover::lease::rules::margin_ms(10);
    let _ = std::any::type_name::<stateright::Expectation>();
}
