//! The macros' error messages (`tests/ui/*.rs` with the expected `.stderr`) and
//! inputs that must compile (`tests/ui/pass/*.rs`). Refresh the `.stderr` files
//! with `TRYBUILD=overwrite cargo test --test compiletest`, then read them.
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
