//! Procedural macros for `failover`. Use them through the re-exports in `failover`.
use proc_macro::TokenStream;

/// See `failover::subsystem`.
#[proc_macro_attribute]
pub fn subsystem(_args: TokenStream, input: TokenStream) -> TokenStream {
    input
}
