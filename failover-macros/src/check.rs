//! Checks: everything the macro can tell is wrong before the compiler sees the
//! expansion, reported together through one [`Ctxt`], each message on the
//! user's own tokens and saying what to write instead.
//!
//! The checks also distil the typed view of `ast.rs` into the plans `expand.rs`
//! generates code from. A plan is produced even when something is wrong, with
//! stubs in place of the bad parts, so that the expansion still gives the
//! compiler the impls the rest of the user's code relies on and one mistake gives
//! one message.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::{FnArg, Ident, LitStr, Path, ReturnType, Signature, Type};

use crate::ast::{ImplInput, TypeInput, TypeKind};
use crate::attr::{default_crate, HookKind, KeySpec, Marker};
use crate::ctxt::Ctxt;

/// What to generate for a subsystem's struct.
pub struct StructPlan {
    pub ident: Ident,
    /// The path of the `failover` crate: the `crate` argument, or the default.
    pub krate: Path,
    /// The name and the key; `None` for a generic type, for which no stub can be
    /// written.
    pub declared: Option<DeclaredPlan>,
}

/// The name and the task key, which the struct declares.
pub struct DeclaredPlan {
    /// The name; a placeholder when it was missing or bad.
    pub name: LitStr,
    /// How to key a task; `None` (missing or bad) generates a stub.
    pub key: Option<KeySpec>,
    /// The task's feed sequence number field, if given.
    pub sequence: Option<(LitStr, Vec<syn::Member>)>,
    /// `queue = "mongodb"`: the durable queue.
    pub durable: Option<LitStr>,
}

/// Checks the struct attribute.
pub fn struct_plan(cx: &Ctxt, input: TypeInput) -> StructPlan {
    const SHAPE: &str = "a subsystem is a struct with named fields, like \
                         `struct Billing { ledger: Ledger }`, or a unit struct, `struct Billing;`";
    match &input.kind {
        TypeKind::Named | TypeKind::Unit => {}
        TypeKind::Tuple(fields) => cx.error_spanned_by(
            fields,
            format!(
                "`#[failover::subsystem]` does not take a tuple struct: {SHAPE}; name the fields"
            ),
        ),
        TypeKind::Enum(token) => cx.error_spanned_by(
            {
                let ident = &input.ident;
                quote::quote!(#token #ident)
            },
            format!(
                "`#[failover::subsystem]` goes on a struct, not on an enum: {SHAPE}, \
                 and on that struct's `impl` block"
            ),
        ),
        TypeKind::Union(token) => cx.error_spanned_by(
            {
                let ident = &input.ident;
                quote::quote!(#token #ident)
            },
            format!(
                "`#[failover::subsystem]` goes on a struct, not on a union: {SHAPE}, \
                 and on that struct's `impl` block"
            ),
        ),
    }
    let generic = !input.generics.params.is_empty();
    if generic {
        cx.error_spanned_by(
            &input.generics,
            "a subsystem cannot be generic: its name and its task type are fixed at compile time; \
             give the struct concrete field types (a `Box<dyn Trait>` field where you need to choose at run time)",
        );
    }

    let args = input.args;
    if !args.name_given {
        cx.error_spanned_by(
            attribute(),
            "missing `name`: every member of a subsystem uses the same name, \
             like `#[failover::subsystem(name = \"billing\", key = \"id\")]`",
        );
    }
    let name = match args.name {
        Some(lit) => {
            if let Err(reason) = validate_name(&lit.value()) {
                cx.error_spanned_by(&lit, format!("invalid subsystem name: {reason}"));
            }
            lit
        }
        None => LitStr::new("", proc_macro2::Span::call_site()),
    };
    if !args.key_given {
        cx.error_spanned_by(
            attribute(),
            "missing task key: name the task's key field with `key = \"id\"`, \
             or give a function with `key_fn = path::to::function` (`fn(&Task) -> impl Serialize`)",
        );
    }

    StructPlan {
        ident: input.ident,
        krate: args.krate.unwrap_or_else(default_crate),
        declared: (!generic).then_some(DeclaredPlan {
            name,
            key: args.key,
            sequence: args.sequence,
            durable: args.durable,
        }),
    }
}

/// The tokens that stand for the attribute itself (its span is the call site).
fn attribute() -> TokenStream {
    quote::quote!(subsystem)
}

/// The rule of `failover::options::validate_name`, at compile time: the name
/// becomes the `_id` of the lease document. Keep the two in step.
fn validate_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "must not be empty; name the subsystem, for example \"billing\"".to_owned()
    } else if name.len() > 128 {
        format!(
            "must be at most 128 bytes; this one is {} bytes",
            name.len()
        )
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        format!("must not contain control characters, and this one contains {c:?}")
    } else if name.trim() != name {
        "must not begin or end with white space".to_owned()
    } else if name.starts_with('$') {
        "must not begin with `$`, which MongoDB reserves for operators".to_owned()
    } else {
        return Ok(());
    };
    Err(reason)
}

/// What to generate for a subsystem's `impl` block.
pub struct ImplPlan {
    pub item: syn::ItemImpl,
    /// The `crate` argument of the impl attribute, if given: the struct's `crate`
    /// is the one used, and this one must name the same path.
    pub krate: Option<Path>,
    /// `None` when the self type cannot carry the impls (trait impl, generics):
    /// only the block is re-emitted.
    pub self_ty: Option<Type>,
    /// The path of the hidden macro that the struct attribute declares beside the
    /// struct, under the struct's own name: the self type's path without generic
    /// arguments. `None` when the self type is no path (the compiler rejects such
    /// an inherent `impl` anyway).
    pub declaration: Option<Path>,
    /// The `#[work]` method, or the error that says why there is no usable one.
    /// That error is not reported to the [`Ctxt`]: the expansion puts it in place
    /// of the task type, which then counts as an error type, so that the struct's
    /// key and the user's calls are not reported again.
    pub work: Result<WorkPlan, syn::Error>,
    /// The hooks that passed the checks.
    pub hooks: Vec<HookPlan>,
}

/// The `#[work]` method.
pub struct WorkPlan {
    pub method: Ident,
    /// The task type: the parameter's type without its `&`.
    pub task: Type,
    /// Whether the method takes the task by reference (else by value, cloned).
    pub task_by_ref: bool,
    /// The context parameter's type, if the method takes one.
    pub ctx: Option<Type>,
    /// The return type, if it can be named (not `impl Trait`).
    pub output: Option<Type>,
    /// The method's signature, for spans.
    pub sig: Signature,
    /// False when the method has a mistake: the `work` body is a stub.
    pub ok: bool,
}

/// A hook method.
pub struct HookPlan {
    pub kind: HookKind,
    pub method: Ident,
    pub params: Vec<Type>,
    pub is_async: bool,
    pub output: Option<Type>,
}

/// Checks the impl attribute and its marked methods.
pub fn impl_plan(cx: &Ctxt, input: ImplInput) -> ImplPlan {
    let ImplInput {
        item,
        krate,
        marked,
    } = input;
    let mut usable = true;
    if let Some((_, trait_path, _)) = &item.trait_ {
        cx.error_spanned_by(
            trait_path,
            format!(
                "`#[failover::subsystem]` goes on the inherent `impl` block, `impl {}`, \
                 which holds the `#[work]` method and the hooks; the macro implements `Work` and `Hooks` itself",
                item.self_ty.to_token_stream()
            ),
        );
        usable = false;
    }
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            "a subsystem cannot be generic: write `impl Billing` for a concrete struct",
        );
        usable = false;
    }

    let mut work: Option<Result<WorkPlan, syn::Error>> = None;
    let mut hooks: Vec<HookPlan> = Vec::new();
    // The methods seen so far with each marker, to report a second one.
    let mut first_work: Option<&Ident> = None;
    let mut first_hooks: Vec<(HookKind, &Ident)> = Vec::new();
    for method in &marked {
        match method.marker {
            Marker::Work => {
                if let Some(first) = first_work {
                    cx.error_spanned_by(
                        &method.attr,
                        format!(
                            "a second `#[work]` method: a subsystem has one, and `{first}` is already it; \
                             call the others from it"
                        ),
                    );
                    continue;
                }
                first_work = Some(&method.sig.ident);
                work = Some(work_plan(cx, &method.sig));
            }
            Marker::Hook(kind) => {
                if let Some((_, first)) = first_hooks.iter().find(|(k, _)| *k == kind) {
                    cx.error_spanned_by(
                        &method.attr,
                        format!(
                            "a second `#[{}]` hook: a subsystem has at most one, and `{first}` is already it",
                            kind.name(),
                        ),
                    );
                    continue;
                }
                first_hooks.push((kind, &method.sig.ident));
                hooks.extend(hook_plan(cx, kind, &method.sig));
            }
        }
    }
    let work = work.unwrap_or_else(|| {
        Err(syn::Error::new_spanned(
            &item.self_ty,
            format!(
                "`{}` has no `#[work]` method: mark the method that does a task, like \
                 `#[work] async fn charge(&self, task: &Task) -> failover::Outcome`",
                item.self_ty.to_token_stream()
            ),
        ))
    });
    ImplPlan {
        self_ty: usable.then(|| (*item.self_ty).clone()),
        declaration: declaration_path(&item.self_ty),
        work,
        hooks,
        item,
        krate,
    }
}

/// `Jobs` for `impl Jobs`, `super::Jobs` for `impl super::Jobs`: where the struct
/// attribute's hidden macro is found, since it has the struct's name (in the macro
/// namespace) and so goes wherever the struct is imported.
fn declaration_path(self_ty: &Type) -> Option<Path> {
    match ungroup(self_ty) {
        Type::Path(p) if p.qself.is_none() => {
            let mut path = p.path.clone();
            path.segments.last_mut()?.arguments = syn::PathArguments::None;
            Some(path)
        }
        _ => None,
    }
}

/// The signature of a `#[work]` method, for messages.
fn work_signature(sig: &Signature) -> String {
    format!(
        "async fn {}(&self, task: &Task, ctx: &failover::WorkContext) -> failover::Outcome",
        sig.ident
    )
}

/// Checks a `#[work]` method. Returns no plan only when the task type is unknown,
/// with the error to report in its place.
fn work_plan(cx: &Ctxt, sig: &Signature) -> Result<WorkPlan, syn::Error> {
    let signature = work_signature(sig);
    let mut ok = qualifiers(cx, sig, "a `#[work]` method", &signature);
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            format!(
                "a `#[work]` method must be `async`: write `async fn {}(...)`",
                sig.ident
            ),
        );
        ok = false;
    }
    ok &= receiver(cx, sig, "a `#[work]` method", &signature);

    let params: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(pt) => Some(pt),
            FnArg::Receiver(_) => None,
        })
        .collect();
    if params.is_empty() {
        return Err(syn::Error::new_spanned(
            sig.inputs
                .first()
                .map_or_else(|| sig.ident.to_token_stream(), ToTokens::into_token_stream),
            format!(
                "a `#[work]` method takes the task after `&self`: write `async fn {}(&self, task: &Task)`, \
                 optionally with `ctx: &failover::WorkContext` after the task",
                sig.ident
            ),
        ));
    }
    if params.len() > 2 {
        let extra: TokenStream = params[2..]
            .iter()
            .flat_map(|p| p.to_token_stream())
            .collect();
        cx.error_spanned_by(
            extra,
            format!(
                "a `#[work]` method takes the task and, optionally, the work context: \
                 `{signature}`; remove {}",
                if params.len() == 3 {
                    "this parameter"
                } else {
                    "these parameters"
                }
            ),
        );
        ok = false;
    }

    let (task, task_by_ref) = match ungroup(&params[0].ty) {
        Type::Reference(r) if r.mutability.is_some() => {
            cx.error_spanned_by(
                r,
                format!(
                    "a `#[work]` method takes the task as a shared reference: write `&{}`; \
                     keep what the work changes in the subsystem, behind a lock",
                    r.elem.to_token_stream()
                ),
            );
            ((*r.elem).clone(), true)
        }
        Type::Reference(r) => ((*r.elem).clone(), true),
        ty => ((*ty).clone(), false),
    };
    if contains_impl_trait(&task) {
        return Err(syn::Error::new_spanned(
            &params[0].ty,
            "the task parameter must name the task type, like `task: &Invoice`",
        ));
    }

    let output = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) if contains_impl_trait(ty) => None,
        ReturnType::Type(_, ty) => Some((**ty).clone()),
    };

    Ok(WorkPlan {
        method: sig.ident.clone(),
        task,
        task_by_ref,
        ctx: params.get(1).map(|p| (*p.ty).clone()),
        output,
        sig: sig.clone(),
        ok,
    })
}

/// Checks a hook method; returns no plan when it cannot be called as the hook.
fn hook_plan(cx: &Ctxt, kind: HookKind, sig: &Signature) -> Option<HookPlan> {
    let what = format!("an `#[{}]` hook", kind.name());
    let signature = kind.signature(&sig.ident.to_string());
    let mut ok = qualifiers(cx, sig, &what, &signature);
    ok &= receiver(cx, sig, &what, &signature);
    let params: Vec<Type> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(pt) => Some((*pt.ty).clone()),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let expected = kind.params().len();
    if params.len() != expected {
        let tokens = if params.len() > expected {
            sig.inputs
                .iter()
                .filter(|arg| matches!(arg, FnArg::Typed(_)))
                .skip(expected)
                .flat_map(ToTokens::into_token_stream)
                .collect()
        } else {
            sig.ident.to_token_stream()
        };
        cx.error_spanned_by(
            tokens,
            format!(
                "{what} takes {} after `&self`, not {}: write `{signature}` (or without `async`)",
                match expected {
                    1 => "one parameter".to_owned(),
                    n => format!("{n} parameters"),
                },
                params.len()
            ),
        );
        ok = false;
    }
    let output = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) if contains_impl_trait(ty) => {
            cx.error_spanned_by(
                ty,
                format!("a hook returns nothing: write `{signature}` and remove the return type"),
            );
            ok = false;
            None
        }
        ReturnType::Type(_, ty) => Some((**ty).clone()),
    };
    ok.then(|| HookPlan {
        kind,
        method: sig.ident.clone(),
        params,
        is_async: sig.asyncness.is_some(),
        output,
    })
}

/// `const`, `unsafe`, `extern`, generics: none of them fit a method the runtime calls.
fn qualifiers(cx: &Ctxt, sig: &Signature, what: &str, signature: &str) -> bool {
    let mut ok = true;
    if let Some(token) = &sig.constness {
        cx.error_spanned_by(
            token,
            format!("{what} cannot be `const`: write `{signature}`"),
        );
        ok = false;
    }
    if let Some(token) = &sig.unsafety {
        cx.error_spanned_by(
            token,
            format!("{what} cannot be `unsafe`, since the runtime calls it: use an `unsafe` block inside"),
        );
        ok = false;
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(
            abi,
            format!("{what} cannot have an ABI: write `{signature}`"),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let tokens = {
            let mut t = sig.generics.to_token_stream();
            sig.generics.where_clause.to_tokens(&mut t);
            t
        };
        cx.error_spanned_by(
            tokens,
            format!(
                "{what} cannot be generic: the runtime calls it with one type; write `{signature}`"
            ),
        );
        ok = false;
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned_by(variadic, format!("write `{signature}`"));
        ok = false;
    }
    ok
}

/// The method takes `&self` first.
fn receiver(cx: &Ctxt, sig: &Signature, what: &str, signature: &str) -> bool {
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            let shared_ref = match &*r.ty {
                Type::Reference(reference) => reference.mutability.is_none(),
                _ => false,
            };
            if !shared_ref {
                let how = if r.mutability.is_some()
                    || matches!(&*r.ty, Type::Reference(t) if t.mutability.is_some())
                {
                    "the runtime shares the subsystem between the election and the work, \
                     so keep state that changes behind a lock (`Mutex`) or in atomics"
                } else {
                    "the runtime keeps the subsystem and calls it many times"
                };
                cx.error_spanned_by(
                    r,
                    format!("{what} takes `&self`: {how}; write `{signature}`"),
                );
            }
            shared_ref
        }
        _ => {
            cx.error_spanned_by(
                sig.inputs
                    .first()
                    .map_or_else(|| sig.ident.to_token_stream(), ToTokens::into_token_stream),
                format!("{what} takes `&self` first: write `{signature}`"),
            );
            false
        }
    }
}

/// The type inside invisible groups (a `$t:ty` of `macro_rules!`) and parentheses.
fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => ungroup(&group.elem),
        Type::Paren(paren) => ungroup(&paren.elem),
        ty => ty,
    }
}

/// Whether `impl Trait` appears in the type (it cannot be named in the expansion).
fn contains_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Ident(ident) => ident == "impl",
            TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases of `failover::options::tests::bad_names_are_refused`.
    #[test]
    fn names_follow_the_runtime_rule() {
        for name in ["", " x", "x ", "a\nb", "$x", &"x".repeat(129)] {
            assert!(validate_name(name).is_err(), "{name:?} accepted");
        }
        validate_name("billing-eu.1:a").unwrap();
        validate_name(&"é".repeat(64)).unwrap();
        assert!(
            validate_name(&"é".repeat(65)).is_err(),
            "130 bytes accepted"
        );
    }
}
