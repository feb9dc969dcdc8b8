//! Code generation.
//!
//! Every path goes through the hidden module `failover::__private`, by an absolute
//! path or by an alias the expansion declares itself (see below), so the expansion
//! needs no imports. Where the compiler may find a mistake (a key field
//! that does not exist, a return type that is no outcome, a hook parameter of the
//! wrong type, a future that is not `Send`), the generated tokens are located at
//! the user's token (see [`at`]), so that the error is reported there.
//!
//! Generated names (local variables, `Self`, `self`) resolve at the call site
//! wherever they are located, so that they also work inside `macro_rules!`
//! expansions; the user's own tokens keep their own resolution.
//!
//! # Where the crate is
//!
//! The struct and its `impl` block are expanded separately, and only the struct's
//! attribute needs `crate = "..."`. So the struct's expansion also declares a
//! hidden `macro_rules!` under the struct's own name (in the macro namespace, which
//! a struct leaves free), which goes wherever the struct is imported. The `impl`
//! block's expansion hands its generated items to that macro (`Jobs! { ... }`),
//! which puts them in an anonymous `const` block after `use <crate> as __failover;`
//! with the struct's crate path; the generated items name the crate as
//! `__failover` only. A `crate` on the `impl` block is accepted if it is the
//! struct's, and reported otherwise.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, Item, Path, ReturnType, Type};

use crate::ast::Input;
use crate::attr::{default_crate, HookKind, KeySpec};
use crate::check::{self, DeclaredPlan, HookPlan, ImplPlan, StructPlan, WorkPlan};
use crate::ctxt::Ctxt;

/// `#[failover::subsystem(...)]` on a struct or on an `impl` block.
pub fn subsystem(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: Item = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(error) => {
            // Not an item we can read: leave it to the compiler, which will say why.
            let error = error.to_compile_error();
            return quote!(#input #error);
        }
    };
    let cx = Ctxt::new();
    let tokens = match Input::from_syn(&cx, args, item) {
        Input::Type(input) => {
            let item = input.item.to_token_stream();
            let plan = check::struct_plan(&cx, *input);
            let impls = plan
                .declared
                .as_ref()
                .map(|declared| struct_impls(&plan, declared));
            let declaration = declaration_macro(&plan);
            quote!(#item #impls #declaration)
        }
        Input::Impl(input) => impl_block(check::impl_plan(&cx, input)),
        Input::Other(item) => {
            cx.error_spanned_by(
                item_head(&item),
                "`#[failover::subsystem]` goes on a struct, with the subsystem's name and task key, \
                 and on that struct's `impl` block, with the `#[work]` method and the hooks",
            );
            item.into_token_stream()
        }
    };
    match cx.check() {
        Ok(()) => tokens,
        Err(errors) => {
            let errors = errors.to_compile_error();
            quote!(#tokens #errors)
        }
    }
}

/// `#[work]` or a hook attribute outside a `#[failover::subsystem]` impl block:
/// the item unchanged, and an error on the attribute.
pub fn misplaced(marker: &str, input: TokenStream) -> TokenStream {
    let message = format!(
        "`#[{marker}]` only means something on a method of an `impl` block marked \
         `#[failover::subsystem]`: put `#[failover::subsystem]` on this method's `impl` block \
         (and `#[failover::subsystem(name = \"...\", key = \"...\")]` on the struct)"
    );
    let error = syn::Error::new(Span::call_site(), message).to_compile_error();
    quote!(#input #error)
}

/// The tokens that name an item for a message: `fn name`, `trait Name`, ...
fn item_head(item: &Item) -> TokenStream {
    match item {
        Item::Fn(f) => {
            let (token, ident) = (&f.sig.fn_token, &f.sig.ident);
            quote!(#token #ident)
        }
        Item::Trait(t) => {
            let (token, ident) = (&t.trait_token, &t.ident);
            quote!(#token #ident)
        }
        Item::Mod(m) => {
            let (token, ident) = (&m.mod_token, &m.ident);
            quote!(#token #ident)
        }
        Item::Type(t) => {
            let (token, ident) = (&t.type_token, &t.ident);
            quote!(#token #ident)
        }
        Item::Const(c) => {
            let (token, ident) = (&c.const_token, &c.ident);
            quote!(#token #ident)
        }
        Item::Static(s) => {
            let (token, ident) = (&s.static_token, &s.ident);
            quote!(#token #ident)
        }
        other => other.to_token_stream(),
    }
}

/// The hidden module of the crate, as the `impl` side names it: through the alias
/// that the struct's hidden macro declares (see the module documentation).
fn private() -> TokenStream {
    let alias = local("__failover");
    quote!(#alias::__private)
}

/// A path without its leading `::`, for comparing two `crate` arguments.
fn normalized(path: &Path) -> TokenStream {
    let segments = &path.segments;
    quote!(#segments)
}

/// `tokens`, each located at `span` for messages but resolved as before: a
/// generated token still resolves at the call site, a user token where the user
/// wrote it.
fn at(span: Span, tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut located = Group::new(group.delimiter(), at(span, group.stream()));
                located.set_span(group.span().located_at(span));
                TokenTree::Group(located)
            }
            mut token => {
                token.set_span(token.span().located_at(span));
                token
            }
        })
        .collect()
}

/// A local variable of the expansion, resolved at the call site.
fn local(name: &str) -> Ident {
    Ident::new(name, Span::call_site())
}

/// The struct side: the name and the task key, for the `impl` side to read.
fn struct_impls(plan: &StructPlan, declared: &DeclaredPlan) -> TokenStream {
    let StructPlan { ident, krate, .. } = plan;
    let DeclaredPlan {
        name,
        key,
        sequence,
        durable,
    } = declared;
    let p = quote!(#krate::__private);
    let task = local("task");
    let key_body = match key {
        // Located at the literal: a field the task does not have, or whose type
        // is not `Serialize`, is reported at `key = "id"`.
        Some(KeySpec::Field(lit, members)) => {
            at(lit.span(), quote!(#p::to_key(&#task #(.#members)*)))
        }
        Some(KeySpec::Fn(function)) => at(function.span(), quote!(#p::to_key(&(#function)(#task)))),
        None => quote!({
            let _ = #task;
            #p::Bson::Null
        }),
    };
    // Everything but the key is located at the struct's name: a struct without
    // a `Work` impl (no impl block with `#[failover::subsystem]`) is reported
    // there, once.
    let located = |tokens| at(ident.span(), tokens);
    let header = located(quote!(impl #p::Declared for #ident));
    let name = located(quote!(const NAME: &'static str = #name;));
    let signature = located(quote!(fn key(#task: &<Self as #p::Work>::Task) -> #p::Bson));
    let body = block(ident.span(), key_body);
    // Located at the literal: a field the task does not have, or whose type is
    // not an integer, is reported at `sequence = "offset"`.
    let sequence = sequence.as_ref().map(|(lit, members)| {
        let signature = located(quote!(
            fn sequence(#task: &<Self as #p::Work>::Task) -> ::core::option::Option<u64>
        ));
        let body = block(
            ident.span(),
            at(lit.span(), quote!(#p::to_sequence(&#task #(.#members)*))),
        );
        quote!(#signature #body)
    });
    // Located at the literal: a task type that cannot be read back from the
    // database is reported at `queue = "mongodb"`.
    let durable = durable.as_ref().map(|lit| {
        let signature = located(quote!(
            fn durable() -> ::core::option::Option<#p::Decoder<<Self as #p::Work>::Task>>
        ));
        let body = block(
            ident.span(),
            at(
                lit.span(),
                quote!(::core::option::Option::Some(#p::decoder::<<Self as #p::Work>::Task>())),
            ),
        );
        quote!(#signature #body)
    });
    let items = block(
        ident.span(),
        quote!(#name #signature #body #sequence #durable),
    );
    quote!(#[automatically_derived] #header #items)
}

/// The struct side's hidden macro, under the struct's name: it wraps the items
/// the `impl` side generates in `const _: () = { use <crate> as __failover; ... };`
/// and checks the `impl` block's own `crate`, if it has one.
///
/// `Jobs! { @impl [<the impl's crate, or nothing>] { <its error if another> } <items> }`
fn declaration_macro(plan: &StructPlan) -> TokenStream {
    let StructPlan { ident, krate, .. } = plan;
    let name = format_ident!("__failover_subsystem_{}", ident.unraw());
    let alias = local("__failover");
    let same = normalized(krate);
    let wrap = quote!(const _: () = { use #krate as #alias; $($items)* };);
    quote! {
        #[doc(hidden)]
        #[allow(unused_macros)]
        macro_rules! #name {
            (@impl [] $error:tt $($items:tt)*) => { #wrap };
            (@impl [#same] $error:tt $($items:tt)*) => { #wrap };
            (@impl [$($other:tt)*] { $($error:tt)* } $($items:tt)*) => { $($error)* #wrap };
        }
        #[doc(hidden)]
        #[allow(unused_imports)]
        pub(crate) use #name as #ident;
    }
}

/// `{ tokens }`, the braces located at `span`, the tokens as they are.
fn block(span: Span, tokens: TokenStream) -> TokenTree {
    let mut group = Group::new(Delimiter::Brace, tokens);
    group.set_span(Span::call_site().located_at(span));
    TokenTree::Group(group)
}

fn start_doc() -> Vec<String> {
    [
        "Starts this process's member of the subsystem: it joins the election and",
        "starts the work queue, and runs until it is shut down or dropped.",
        "",
        "Feed every member the same tasks with `submit_work`; the master works them, the",
        "standbys keep them until the master publishes that they are done. Leave with",
        "`shutdown`, which hands the lease over; dropping the member stops it like a crash.",
        "",
        "Generated by `#[failover::subsystem]`: the same as",
        "`failover::Managed::start_subsystem(options, self)`.",
        "",
        "# Errors",
        "",
        "Fails when the options or the subsystem's name are invalid, or the database",
        "cannot be reached.",
    ]
    .into_iter()
    .map(|line| {
        if line.is_empty() {
            String::new()
        } else {
            format!(" {line}")
        }
    })
    .collect()
}

/// The `impl` side: the block without its markers, and `start`, `Subsystem`,
/// `Work` and `Hooks`, handed to the struct's hidden macro (see the module
/// documentation).
fn impl_block(plan: ImplPlan) -> TokenStream {
    let ImplPlan {
        item,
        krate,
        self_ty,
        declaration,
        work,
        hooks,
    } = plan;
    let Some(self_ty) = self_ty else {
        return item.into_token_stream();
    };
    let p = private();
    let work = work_impl(&p, &self_ty, &work);
    let hooks = hooks_impl(&p, &self_ty, &hooks);
    let doc = start_doc();
    // Located at the block's type: a struct without the struct attribute is
    // reported there.
    let declared = at(self_ty.span(), quote!(<Self as #p::Declared>));
    let items = quote! {
        impl #self_ty {
            #(#[doc = #doc])*
            #[allow(dead_code, unreachable_pub)]
            pub async fn start(
                self,
                options: #p::Options,
            ) -> #p::Result<#p::Managed<Self>> {
                #p::Managed::start_subsystem(options, self).await
            }
        }

        #[automatically_derived]
        impl #p::Subsystem for #self_ty {
            const NAME: &'static str = #declared::NAME;
            fn __durable_decoder() -> ::core::option::Option<#p::Decoder<<Self as #p::Work>::Task>> {
                #declared::durable()
            }
        }

        #work
        #hooks
    };
    let expansion = match declaration {
        Some(declaration) => {
            let given = krate.as_ref().map(normalized);
            let mismatch = krate.as_ref().map(|krate| {
                syn::Error::new_spanned(
                    krate,
                    format!(
                        "`crate = \"{}\"` differs from the `crate` of the struct's \
                         `#[failover::subsystem(...)]`; give `crate` once, on the struct: \
                         the `impl` block finds it there",
                        normalized(krate).to_string().replace(' ', "")
                    ),
                )
                .to_compile_error()
            });
            // Located at the block's type: a struct without the struct attribute
            // is reported there.
            let invocation = at(self_ty.span(), quote!(#declaration!));
            quote!(#invocation { @impl [#given] { #mismatch } #items })
        }
        None => {
            let krate = krate.unwrap_or_else(default_crate);
            let alias = local("__failover");
            quote!(const _: () = { use #krate as #alias; #items };)
        }
    };
    quote! {
        #item

        #expansion
    }
}

/// `Work`. Without a usable `#[work]` method, the task type is an array whose
/// length is a `compile_error!`: it reports the mistake once and stands in for the
/// task elsewhere as a type that references an error, about which the compiler
/// says nothing more (a `compile_error!` in type position would be `()`, and the
/// struct's key would then be reported as a missing field of `()`).
fn work_impl(p: &TokenStream, self_ty: &Type, plan: &Result<WorkPlan, syn::Error>) -> TokenStream {
    let task = local("task");
    let ctx = local("ctx");
    let outcome = local("outcome");
    let declared = at(self_ty.span(), quote!(<Self as #p::Declared>));
    let stub = quote!({
        let _ = (#task, #ctx);
        #p::pending()
    });
    let (task_ty, future, body) = match plan {
        Err(error) => (
            {
                let error = error.to_compile_error();
                quote!([(); { #error }])
            },
            quote!(impl #p::Future<Output = #p::Outcome> + #p::Send),
            stub,
        ),
        Ok(plan) => {
            let WorkPlan {
                method,
                task: task_ty,
                task_by_ref,
                ctx: ctx_ty,
                output,
                sig,
                ok,
            } = plan;
            let body = if *ok {
                let task_arg = if *task_by_ref {
                    task.to_token_stream()
                } else {
                    at(
                        task_ty.span(),
                        quote!(<#task_ty as #p::TaskByValue>::task(#task)),
                    )
                };
                let ctx_arg = ctx_ty.as_ref().map(|ty| {
                    let arg = at(
                        ty.span(),
                        quote!(<#ty as #p::ContextArg<'_>>::context(#ctx)),
                    );
                    quote!(, #arg)
                });
                // The conversion names the method's return type, so that a type
                // that is no outcome is reported on it.
                let convert = match (output, &sig.output) {
                    (Some(ty), _) => at(ty.span(), quote!(#p::into_outcome::<#ty>(#outcome))),
                    (None, ReturnType::Type(_, ty)) => {
                        at(ty.span(), quote!(#p::into_outcome(#outcome)))
                    }
                    (None, ReturnType::Default) => quote!(#p::into_outcome(#outcome)),
                };
                // Located at the method's name, which a message about the future
                // (not `Send`) names.
                let async_move = at(method.span(), quote!(async move));
                let block = block(
                    method.span(),
                    quote! {
                        let #outcome = Self::#method(self, #task_arg #ctx_arg).await;
                        #convert
                    },
                );
                quote!(#async_move #block)
            } else {
                stub
            };
            (
                task_ty.to_token_stream(),
                // A future that is not `Send` is reported on the method's name.
                at(
                    method.span(),
                    quote!(impl #p::Future<Output = #p::Outcome> + #p::Send),
                ),
                body,
            )
        }
    };
    quote! {
        #[automatically_derived]
        impl #p::Work for #self_ty {
            type Task = #task_ty;
            type Key = #p::Bson;

            fn key(&self, #task: &<Self as #p::Work>::Task) -> #p::Bson {
                #declared::key(#task)
            }

            fn sequence(
                &self,
                #task: &<Self as #p::Work>::Task,
            ) -> ::core::option::Option<u64> {
                #declared::sequence(#task)
            }

            fn work(
                &self,
                #task: &<Self as #p::Work>::Task,
                #ctx: &#p::WorkContext,
            ) -> #future {
                #body
            }
        }
    }
}

fn hooks_impl(p: &TokenStream, self_ty: &Type, hooks: &[HookPlan]) -> TokenStream {
    let methods = hooks.iter().map(|hook| hook_method(p, hook));
    quote! {
        #[automatically_derived]
        impl #p::Hooks for #self_ty {
            #(#methods)*
        }
    }
}

fn hook_method(p: &TokenStream, hook: &HookPlan) -> TokenStream {
    let HookPlan {
        kind,
        method,
        params: user_types,
        is_async,
        output,
    } = hook;
    let name = local(kind.name());
    let params: Vec<(Ident, TokenStream)> = match kind {
        HookKind::Master | HookKind::Slave => vec![("epoch", quote!(u64))],
        HookKind::Synchronize => vec![("id", quote!(#p::Bson))],
        HookKind::StateChange => vec![("old", quote!(#p::State)), ("new", quote!(#p::State))],
        HookKind::Error => vec![("error", quote!(#p::Error))],
    }
    .into_iter()
    .map(|(name, ty)| (local(name), ty))
    .collect();
    let declared = params.iter().map(|(name, ty)| quote!(#name: #ty));
    // Each argument goes through `HookArg<Expected>`, located at the user's type.
    let args = params
        .iter()
        .zip(user_types)
        .map(|((name, expected), user)| {
            at(
                user.span(),
                quote!(<#user as #p::HookArg<#expected>>::arg(#name)),
            )
        });
    let call = quote!(Self::#method(self, #(#args),*));
    let call = if *is_async { quote!(#call.await) } else { call };
    let done = match output {
        Some(ty) => at(ty.span(), quote!(#p::hook_done::<#ty>)),
        None => quote!(#p::hook_done::<()>),
    };
    // Located at the method's name, which a message about the future (not
    // `Send`) names.
    let future = at(
        method.span(),
        quote!(impl #p::Future<Output = ()> + #p::Send),
    );
    let body = if *is_async {
        let async_move = at(method.span(), quote!(async move));
        let block = block(method.span(), quote!(#done(#call)));
        quote!(#async_move #block)
    } else {
        // A plain `fn` hook runs when the runtime calls it.
        quote!({
            #done(#call);
            #p::ready(())
        })
    };
    quote! {
        fn #name(&self, #(#declared),*) -> #future {
            #body
        }
    }
}
