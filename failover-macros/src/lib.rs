//! Procedural macros for `failover`: an implementation detail. Use them through
//! the re-exports in `failover` (`failover::subsystem`, `failover::work`, ...),
//! which carry the documentation.
//!
//! Layers, each using only the ones above it in this list:
//!
//! - `ctxt.rs`: the collector of every error found;
//! - `attr.rs`: parses the attributes (the arguments, the markers) into plain data;
//! - `ast.rs`: the typed view of the item, with its attributes parsed;
//! - `check.rs`: checks the view and distils it into plans;
//! - `expand.rs`: generates the code from the plans, and drives the stages.

mod ast;
mod attr;
mod check;
mod ctxt;
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
