//! Attribute parsing: the arguments of `#[failover::subsystem(...)]` and the
//! marker attributes (`#[work]`, hooks) inside a subsystem's `impl` block.
//!
//! Parsing records what it finds, with spans, as plain data, and reports every
//! bad argument to the [`Ctxt`]; it never stops at the first one. Whether the
//! arguments fit the item (a struct needs `name` and a key) is decided in
//! `check.rs`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::Parser;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Member, Meta, Path, Token};

use crate::ctxt::Ctxt;

/// `name = "billing"`
pub const NAME: &str = "name";
/// `key = "id"`
pub const KEY: &str = "key";
/// `key_fn = path::to::function`
pub const KEY_FN: &str = "key_fn";
/// `sequence = "offset"`
pub const SEQUENCE: &str = "sequence";
/// `crate = "path::to::failover"`
pub const CRATE: &str = "crate";
/// `queue = "mongodb"` (or `"memory"`, the default)
pub const QUEUE: &str = "queue";

/// The arguments of the struct attribute, in the order a message lists them.
const STRUCT_ARGS: &[&str] = &[NAME, KEY, KEY_FN, SEQUENCE, QUEUE, CRATE];

/// The marker attributes of methods in a subsystem's `impl` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `#[work]`
    Work,
    /// A hook attribute.
    Hook(HookKind),
}

/// The hooks, named as the methods of `failover::Hooks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// `#[on_master]`: `(&self, epoch: u64)`
    Master,
    /// `#[on_slave]`: `(&self, epoch: u64)`
    Slave,
    /// `#[on_synchronize]`: `(&self, id: Bson)`
    Synchronize,
    /// `#[on_state_change]`: `(&self, old: State, new: State)`
    StateChange,
    /// `#[on_error]`: `(&self, error: Error)`
    Error,
}

impl HookKind {
    pub const ALL: [HookKind; 5] = [
        HookKind::Master,
        HookKind::Slave,
        HookKind::Synchronize,
        HookKind::StateChange,
        HookKind::Error,
    ];

    /// The attribute's name, which is also the `Hooks` method's name.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Master => "on_master",
            HookKind::Slave => "on_slave",
            HookKind::Synchronize => "on_synchronize",
            HookKind::StateChange => "on_state_change",
            HookKind::Error => "on_error",
        }
    }

    /// The `Hooks` method's parameters: name and type as a user writes it.
    pub fn params(self) -> &'static [(&'static str, &'static str)] {
        match self {
            HookKind::Master | HookKind::Slave => &[("epoch", "u64")],
            HookKind::Synchronize => &[("id", "failover::bson::Bson")],
            HookKind::StateChange => &[("old", "failover::State"), ("new", "failover::State")],
            HookKind::Error => &[("error", "failover::Error")],
        }
    }

    /// The signature a user writes, for messages: `async fn leading(&self, epoch: u64)`.
    pub fn signature(self, method: &str) -> String {
        let params: Vec<String> = self
            .params()
            .iter()
            .map(|(name, ty)| format!(", {name}: {ty}"))
            .collect();
        format!("async fn {method}(&self{})", params.concat())
    }
}

impl Marker {
    pub fn name(self) -> &'static str {
        match self {
            Marker::Work => "work",
            Marker::Hook(hook) => hook.name(),
        }
    }

    fn from_name(name: &str) -> Option<Marker> {
        if name == "work" {
            return Some(Marker::Work);
        }
        HookKind::ALL
            .into_iter()
            .find(|h| h.name() == name)
            .map(Marker::Hook)
    }
}

/// One argument that may be given once; a second one is reported where it stands.
pub struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: &'static str,
    tokens: TokenStream,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    fn none(cx: &'c Ctxt, name: &'static str) -> Self {
        Attr {
            cx,
            name,
            tokens: TokenStream::new(),
            value: None,
        }
    }

    fn set<A: ToTokens>(&mut self, obj: A, value: T) {
        if self.value.is_some() {
            self.cx.error_spanned_by(
                obj,
                format!("duplicate `{}` argument; give it once", self.name),
            );
        } else {
            self.tokens = obj.into_token_stream();
            self.value = Some(value);
        }
    }

    /// Whether the argument was given (even if its value was bad).
    fn get(self) -> Option<(TokenStream, T)> {
        let tokens = self.tokens;
        self.value.map(|v| (tokens, v))
    }
}

/// How a task's key is found.
pub enum KeySpec {
    /// `key = "id"` (or `"customer.id"`, `"0"`): the literal and the field path,
    /// each member spanned at the literal.
    Field(LitStr, Vec<Member>),
    /// `key_fn = path` (or `key_fn = "path"`): the function, spanned as written.
    Fn(Expr),
}

/// The arguments of the struct attribute, as given. `None` means absent or bad;
/// a bad one has already been reported.
pub struct StructArgs {
    /// `name = "..."`, with the span of the whole argument for messages.
    pub name: Option<LitStr>,
    /// `key` or `key_fn`, whichever was given (if both were, an error is reported
    /// and the first one is kept).
    pub key: Option<KeySpec>,
    /// Whether any key argument was written at all, so that a bad one does not
    /// also count as missing.
    pub key_given: bool,
    /// Whether `name` was written at all.
    pub name_given: bool,
    /// `sequence = "offset"`: the task's feed sequence number field.
    pub sequence: Option<(LitStr, Vec<Member>)>,
    /// `crate = "..."`.
    pub krate: Option<Path>,
    /// `queue = "mongodb"`: the literal, for the durable queue (`"memory"`, the
    /// default, is `None`).
    pub durable: Option<LitStr>,
}

/// The arguments of the impl attribute: only `crate`.
pub struct ImplArgs {
    pub krate: Option<Path>,
}

/// Parses `#[failover::subsystem(...)]` on a struct.
pub fn struct_args(cx: &Ctxt, args: TokenStream) -> StructArgs {
    let mut name = Attr::none(cx, NAME);
    let mut key = Attr::none(cx, KEY);
    let mut key_fn = Attr::none(cx, KEY_FN);
    let mut sequence = Attr::none(cx, SEQUENCE);
    let mut krate = Attr::none(cx, CRATE);
    let mut queue = Attr::none(cx, QUEUE);
    let mut name_given = false;
    let mut key_given = false;

    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(NAME) {
            // name = "billing"
            name_given = true;
            let Some(expr) = value(cx, &meta, "name = \"billing\"")? else {
                return Ok(());
            };
            match string_literal(&expr) {
                Some(lit) => name.set(&meta.path, lit),
                None => cx.error_spanned_by(
                    &expr,
                    "`name` must be a string literal, like `name = \"billing\"`",
                ),
            }
        } else if meta.path.is_ident(KEY) {
            // key = "id"
            key_given = true;
            let Some(expr) = value(cx, &meta, "key = \"id\"")? else {
                return Ok(());
            };
            match string_literal(&expr) {
                Some(lit) => {
                    if let Some(members) = field_path(cx, &lit) {
                        key.set(&meta.path, (lit, members));
                    }
                }
                None => cx.error_spanned_by(
                    &expr,
                    "`key` names a field of the task as a string literal, like `key = \"id\"`; \
                     for a function, write `key_fn = path::to::function`",
                ),
            }
        } else if meta.path.is_ident(KEY_FN) {
            // key_fn = path::to::function   or   key_fn = "path::to::function"
            key_given = true;
            let Some(expr) = value(cx, &meta, "key_fn = path::to::function")? else {
                return Ok(());
            };
            match string_literal(&expr) {
                Some(lit) => match lit.parse::<syn::ExprPath>() {
                    Ok(path) => key_fn.set(&meta.path, Expr::Path(path)),
                    Err(_) => cx.error_spanned_by(
                        &lit,
                        "`key_fn` must be the path of a function, like `key_fn = invoice_key`",
                    ),
                },
                None => key_fn.set(&meta.path, expr),
            }
        } else if meta.path.is_ident(SEQUENCE) {
            // sequence = "offset"
            let Some(expr) = value(cx, &meta, "sequence = \"offset\"")? else {
                return Ok(());
            };
            match string_literal(&expr) {
                Some(lit) => {
                    if let Some(members) = field_path(cx, &lit) {
                        sequence.set(&meta.path, (lit, members));
                    }
                }
                None => cx.error_spanned_by(
                    &expr,
                    "`sequence` names the task's feed sequence number field as a string \
                     literal, like `sequence = \"offset\"`",
                ),
            }
        } else if meta.path.is_ident(CRATE) {
            // crate = "path::to::failover"
            if let Some(path) = crate_arg(cx, &meta)? {
                krate.set(&meta.path, path);
            }
        } else if meta.path.is_ident(QUEUE) {
            // queue = "mongodb"   or   queue = "memory"
            let Some(expr) = value(cx, &meta, "queue = \"mongodb\"")? else {
                return Ok(());
            };
            match string_literal(&expr) {
                Some(lit) if lit.value() == "mongodb" => queue.set(&meta.path, Some(lit)),
                Some(lit) if lit.value() == "memory" => queue.set(&meta.path, None),
                _ => cx.error_spanned_by(
                    &expr,
                    "`queue` is `\"memory\"` (the default: every member keeps the tasks it is \
                     fed in memory) or `\"mongodb\"` (the durable queue: tasks kept in MongoDB)",
                ),
            }
        } else {
            cx.error_spanned_by(
                &meta.path,
                unknown_argument(&meta.path, STRUCT_ARGS, "on a struct"),
            );
            skip_value(&meta)?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }

    let key = match (key.get(), key_fn.get()) {
        (Some((_, (lit, members))), None) => Some(KeySpec::Field(lit, members)),
        (None, Some((_, f))) => Some(KeySpec::Fn(f)),
        (Some((_, (lit, members))), Some((tokens, _))) => {
            cx.error_spanned_by(
                tokens,
                "give either `key = \"field\"` or `key_fn = path`, not both: \
                 `key` reads a field of the task, `key_fn` computes the key",
            );
            Some(KeySpec::Field(lit, members))
        }
        (None, None) => None,
    };

    StructArgs {
        name: name.get().map(|(_, lit)| lit),
        name_given,
        key,
        key_given,
        sequence: sequence.get().map(|(_, v)| v),
        krate: krate.get().map(|(_, path)| path),
        durable: queue.get().and_then(|(_, lit)| lit),
    }
}

/// Parses `#[failover::subsystem(...)]` on an `impl` block: at most `crate = "..."`.
pub fn impl_args(cx: &Ctxt, args: TokenStream) -> ImplArgs {
    let mut krate = Attr::none(cx, CRATE);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(CRATE) {
            // crate = "path::to::failover"
            if let Some(path) = crate_arg(cx, &meta)? {
                krate.set(&meta.path, path);
            }
        } else if [NAME, KEY, KEY_FN, SEQUENCE, QUEUE]
            .iter()
            .any(|a| meta.path.is_ident(a))
        {
            cx.error_spanned_by(
                &meta.path,
                format!(
                    "`{}` goes on the struct, not on the `impl` block: \
                     `#[failover::subsystem(name = \"...\", key = \"...\")] struct ...`; \
                     on the `impl` block write `#[failover::subsystem]`",
                    meta.path.to_token_stream()
                ),
            );
            skip_value(&meta)?;
        } else {
            cx.error_spanned_by(
                &meta.path,
                unknown_argument(&meta.path, &[CRATE], "on an `impl` block"),
            );
            skip_value(&meta)?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }
    ImplArgs {
        krate: krate.get().map(|(_, path)| path),
    }
}

/// `::failover`, where the crate is unless `crate = "..."` says otherwise.
pub fn default_crate() -> Path {
    syn::parse_quote!(::failover)
}

/// The marker attribute among `attrs`, if any; every marker is removed from
/// `attrs`. Several markers on one item are reported; the first is returned.
/// `krate` is the path under which `failover::work` etc. may also be written.
pub fn take_marker(
    cx: &Ctxt,
    attrs: &mut Vec<Attribute>,
    krate: &Path,
) -> Option<(Marker, Attribute)> {
    let mut found: Option<(Marker, Attribute)> = None;
    attrs.retain(|attr| {
        let Some(marker) = marker_of(attr.path(), krate) else {
            return true;
        };
        if !matches!(attr.meta, Meta::Path(_)) {
            cx.error_spanned_by(
                &attr.meta,
                format!(
                    "`#[{}]` takes no arguments; write `#[{}]`",
                    marker.name(),
                    marker.name()
                ),
            );
        }
        match &found {
            None => found = Some((marker, attr.clone())),
            Some((first, _)) => cx.error_spanned_by(
                attr,
                if *first == marker {
                    format!("`#[{}]` is given twice on this method", marker.name())
                } else {
                    format!(
                        "a method can carry one of `#[work]` and the hook attributes; \
                         this one already has `#[{}]`, so `#[{}]` needs a method of its own",
                        first.name(),
                        marker.name()
                    )
                },
            ),
        }
        false
    });
    found
}

/// `work`, `failover::work`, `::failover::work`, the crate's path given with
/// `crate`, or one name before the marker (`fo::work`): a crate renamed to `fo`,
/// whose `crate = "fo"` the struct attribute holds and the `impl` block need not
/// repeat.
fn marker_of(path: &Path, krate: &Path) -> Option<Marker> {
    let last = path.segments.last()?;
    if !last.arguments.is_none() {
        return None;
    }
    let marker = Marker::from_name(&last.ident.to_string())?;
    let prefix: Vec<String> = path
        .segments
        .iter()
        .take(path.segments.len() - 1)
        .map(|s| s.ident.to_string())
        .collect();
    let crate_segments: Vec<String> = krate.segments.iter().map(|s| s.ident.to_string()).collect();
    let plain = prefix.is_empty() && path.leading_colon.is_none();
    let qualified = prefix == crate_segments || prefix.len() == 1;
    (plain || qualified).then_some(marker)
}

/// The value after `=`; reports a missing one with an example and skips a
/// parenthesized list in its place.
fn value(cx: &Ctxt, meta: &syn::meta::ParseNestedMeta, example: &str) -> syn::Result<Option<Expr>> {
    if meta.input.peek(Token![=]) {
        let expr: Expr = meta.value()?.parse()?;
        Ok(Some(expr))
    } else {
        cx.error_spanned_by(
            &meta.path,
            format!(
                "`{}` needs a value: `{example}`",
                meta.path.to_token_stream()
            ),
        );
        skip_value(meta)?;
        Ok(None)
    }
}

/// `crate = "path"` (a string literal, as in serde) or `crate = path`.
fn crate_arg(cx: &Ctxt, meta: &syn::meta::ParseNestedMeta) -> syn::Result<Option<Path>> {
    let Some(expr) = value(cx, meta, "crate = \"path::to::failover\"")? else {
        return Ok(None);
    };
    let path = match &expr {
        Expr::Path(p) if p.qself.is_none() => Some(p.path.clone()),
        _ => string_literal(&expr).and_then(|lit| lit.parse::<Path>().ok()),
    };
    if path.is_none() {
        cx.error_spanned_by(
            &expr,
            "`crate` is the path of the `failover` crate, like `crate = \"my_failover\"`",
        );
    }
    Ok(path)
}

/// Skips whatever follows an argument's name (`= value` or `(...)`).
fn skip_value(meta: &syn::meta::ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _: proc_macro2::Group = meta.input.parse()?;
    }
    Ok(())
}

fn string_literal(expr: &Expr) -> Option<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit.clone()),
        Expr::Group(group) => string_literal(&group.expr),
        _ => None,
    }
}

/// `"id"`, `"customer.id"` or `"0"`: the members to read, each spanned at the literal.
fn field_path(cx: &Ctxt, lit: &LitStr) -> Option<Vec<Member>> {
    let value = lit.value();
    let mut members = Vec::new();
    for segment in value.split('.') {
        let member = if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            segment.parse::<u32>().ok().map(|index| {
                Member::Unnamed(syn::Index {
                    index,
                    span: lit.span(),
                })
            })
        } else {
            syn::parse_str::<syn::Ident>(segment).ok().map(|mut ident| {
                ident.set_span(lit.span());
                Member::Named(ident)
            })
        };
        match member {
            Some(member) => members.push(member),
            None => {
                let hint = if syn::parse_str::<syn::Ident>(&format!("r#{segment}")).is_ok() {
                    format!("; for a field named with a keyword write `key = \"r#{segment}\"`")
                } else {
                    String::new()
                };
                cx.error_spanned_by(
                    lit,
                    format!(
                        "`key` names a field of the task, like `key = \"id\"` \
                         (or `\"customer.id\"`, or `\"0\"` for a tuple struct); \
                         {value:?} is not a field name{hint}"
                    ),
                );
                return None;
            }
        }
    }
    Some(members)
}

/// "unknown argument `nmae` (did you mean `name`?); ... takes ..."
fn unknown_argument(path: &Path, valid: &[&str], place: &str) -> String {
    let given = path.to_token_stream().to_string().replace(' ', "");
    let suggestion = valid
        .iter()
        .filter(|v| distance(&given, v) <= 2)
        .min_by_key(|v| distance(&given, v))
        .map(|v| format!(" (did you mean `{v}`?)"))
        .unwrap_or_default();
    let list = valid
        .iter()
        .map(|v| describe(v))
        .collect::<Vec<_>>()
        .join(", ");
    format!("unknown argument `{given}`{suggestion}; `#[failover::subsystem]` {place} takes {list}")
}

fn describe(arg: &str) -> &'static str {
    match arg {
        NAME => "`name = \"...\"`",
        KEY => "`key = \"field\"`",
        KEY_FN => "`key_fn = path`",
        SEQUENCE => "`sequence = \"field\"`",
        QUEUE => "`queue = \"mongodb\"`",
        CRATE => "`crate = \"path\"`",
        _ => "",
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(args: TokenStream) -> (StructArgs, Vec<String>) {
        let cx = Ctxt::new();
        let parsed = struct_args(&cx, args);
        let errors = match cx.check() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        (parsed, errors)
    }

    #[test]
    fn key_paths() {
        let (args, errors) = parse(quote!(name = "n", key = "customer.r#type.0"));
        assert!(errors.is_empty(), "{errors:?}");
        let Some(KeySpec::Field(_, members)) = args.key else {
            panic!("no key field")
        };
        let members: Vec<String> = members
            .iter()
            .map(|m| m.to_token_stream().to_string())
            .collect();
        assert_eq!(members, ["customer", "r#type", "0"]);

        let (_, errors) = parse(quote!(name = "n", key = "type"));
        assert!(errors[0].contains("r#type"), "{errors:?}");
        let (_, errors) = parse(quote!(name = "n", key = "a..b"));
        assert!(errors[0].contains("not a field name"), "{errors:?}");
    }

    #[test]
    fn every_mistake_is_reported() {
        let (args, errors) = parse(quote!(
            name = 5,
            nmae = "x",
            key = "id",
            key_fn = f,
            crate,
            name = "a"
        ));
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("string literal"));
        assert!(errors[1].contains("did you mean `name`"));
        assert!(errors[2].contains("`crate` needs a value"));
        assert!(errors[3].contains("not both"));
        assert!(args.name_given && args.key_given);
        // A bad `name` does not count as given twice.
        assert_eq!(args.name.map(|l| l.value()), Some("a".to_owned()));
    }

    #[test]
    fn suggestions() {
        assert_eq!(distance("kye", "key"), 2);
        assert_eq!(distance("key_fn", "key_fn"), 0);
        assert_eq!(distance("", "name"), 4);
    }
}
