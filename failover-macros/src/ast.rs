//! A typed view of the item under `#[failover::subsystem]`, keeping the user's
//! tokens (and so their spans) for messages and for the expansion.

use proc_macro2::TokenStream;
use syn::{Attribute, Generics, Ident, ImplItem, Item, ItemImpl, Path, Signature};

use crate::attr::{self, default_crate, ImplArgs, Marker, StructArgs};
use crate::ctxt::Ctxt;

/// The item the attribute is on.
pub enum Input {
    /// A type: the subsystem's state. Only a struct with named fields (or a unit
    /// struct) passes the checks; the others are kept to report them well.
    Type(Box<TypeInput>),
    /// The subsystem's `impl` block.
    Impl(ImplInput),
    /// Anything else, re-emitted as it is.
    Other(Item),
}

/// What kind of type the attribute is on.
pub enum TypeKind {
    /// `struct S { .. }`
    Named,
    /// `struct S;`
    Unit,
    /// `struct S(..);` (the fields, for the message)
    Tuple(syn::FieldsUnnamed),
    /// `enum S { .. }` (the keyword, for the message)
    Enum(syn::token::Enum),
    /// `union S { .. }` (the keyword, for the message)
    Union(syn::token::Union),
}

/// A struct (or enum, union) under `#[failover::subsystem(...)]`.
pub struct TypeInput {
    /// The item, re-emitted unchanged.
    pub item: Item,
    pub ident: Ident,
    pub generics: Generics,
    pub kind: TypeKind,
    pub args: StructArgs,
}

/// An `impl` block under `#[failover::subsystem]`, with the marker attributes
/// taken off its methods.
pub struct ImplInput {
    /// The block, re-emitted without the marker attributes.
    pub item: ItemImpl,
    /// The `crate` argument, if given (the struct's attribute holds the crate's
    /// path; this one is only checked against it).
    pub krate: Option<Path>,
    /// The methods that carried a marker, in order.
    pub marked: Vec<MarkedMethod>,
}

/// A method with `#[work]` or a hook attribute.
pub struct MarkedMethod {
    pub marker: Marker,
    /// The marker attribute as written, for messages.
    pub attr: Attribute,
    pub sig: Signature,
}

impl Input {
    /// Reads the attribute's arguments and the item. Bad arguments and markers in
    /// the wrong place are reported to `cx`; the item is always kept.
    pub fn from_syn(cx: &Ctxt, args: TokenStream, item: Item) -> Input {
        match item {
            Item::Struct(s) => {
                let kind = match &s.fields {
                    syn::Fields::Named(_) => TypeKind::Named,
                    syn::Fields::Unit => TypeKind::Unit,
                    syn::Fields::Unnamed(fields) => TypeKind::Tuple(fields.clone()),
                };
                Input::Type(Box::new(TypeInput {
                    ident: s.ident.clone(),
                    generics: s.generics.clone(),
                    kind,
                    args: attr::struct_args(cx, args),
                    item: Item::Struct(s),
                }))
            }
            Item::Enum(e) => Input::Type(Box::new(TypeInput {
                ident: e.ident.clone(),
                generics: e.generics.clone(),
                kind: TypeKind::Enum(e.enum_token),
                args: attr::struct_args(cx, args),
                item: Item::Enum(e),
            })),
            Item::Union(u) => Input::Type(Box::new(TypeInput {
                ident: u.ident.clone(),
                generics: u.generics.clone(),
                kind: TypeKind::Union(u.union_token),
                args: attr::struct_args(cx, args),
                item: Item::Union(u),
            })),
            Item::Impl(item) => {
                let ImplArgs { krate } = attr::impl_args(cx, args);
                Input::Impl(ImplInput::new(cx, item, krate))
            }
            other => Input::Other(other),
        }
    }
}

impl ImplInput {
    fn new(cx: &Ctxt, mut item: ItemImpl, krate: Option<Path>) -> ImplInput {
        let markers_under = krate.clone().unwrap_or_else(default_crate);
        let mut marked = Vec::new();
        for impl_item in &mut item.items {
            match impl_item {
                ImplItem::Fn(method) => {
                    if let Some((marker, attr)) =
                        attr::take_marker(cx, &mut method.attrs, &markers_under)
                    {
                        marked.push(MarkedMethod {
                            marker,
                            attr,
                            sig: method.sig.clone(),
                        });
                    }
                }
                ImplItem::Const(c) => not_a_method(cx, &mut c.attrs, &markers_under),
                ImplItem::Type(t) => not_a_method(cx, &mut t.attrs, &markers_under),
                ImplItem::Macro(m) => not_a_method(cx, &mut m.attrs, &markers_under),
                _ => {}
            }
        }
        ImplInput {
            item,
            krate,
            marked,
        }
    }
}

fn not_a_method(cx: &Ctxt, attrs: &mut Vec<Attribute>, krate: &Path) {
    if let Some((marker, attr)) = attr::take_marker(cx, attrs, krate) {
        cx.error_spanned_by(
            attr,
            format!(
                "`#[{}]` goes on a method of the `impl` block, like `async fn name(&self, ...)`",
                marker.name()
            ),
        );
    }
}
