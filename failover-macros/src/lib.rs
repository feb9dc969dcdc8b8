//! Procedural macros for `failover`: an implementation detail. Use them through
//! the re-exports in `failover` (`failover::subsystem`, `failover::work`, ...),
//! which carry the documentation.
//!
//! Layout: `ast.rs` reads the item, `attr.rs` the attributes, `check.rs` checks
//! both and reports every mistake together, `expand.rs` generates the code.

mod ast;
mod attr;
mod check;
mod expand;

use proc_macro::TokenStream;

// The entry points carry no documentation of their own: `failover` documents its
// re-exports, and rustdoc would append anything written here to that.

#[proc_macro_attribute]
pub fn subsystem(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::subsystem(args.into(), input.into()).into()
}

#[proc_macro_attribute]
pub fn work(_args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced("work", input.into()).into()
}

#[proc_macro_attribute]
pub fn on_master(_args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced("on_master", input.into()).into()
}

#[proc_macro_attribute]
pub fn on_slave(_args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced("on_slave", input.into()).into()
}

#[proc_macro_attribute]
pub fn on_synchronize(_args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced("on_synchronize", input.into()).into()
}

#[proc_macro_attribute]
pub fn on_state_change(_args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced("on_state_change", input.into()).into()
}

#[proc_macro_attribute]
pub fn on_error(_args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced("on_error", input.into()).into()
}
