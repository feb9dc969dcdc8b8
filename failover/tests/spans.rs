//! The tracing spans around take-over, renewal, release and each managed task
//! carry `subsystem`, `member` and `epoch` (and `key` for tasks).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{fast, ms, until};
use failover::{work_fn, Managed, MemoryStore, WorkContext};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::span::Current;

/// A span's fields by name, as recorded.
type Fieldset = BTreeMap<String, String>;

/// Every span opened: its name and its fields, as recorded so far; and the
/// spans entered (the tests' runtime has one thread), for `Span::current()`.
#[derive(Clone, Default)]
struct Spans {
    spans: Arc<Mutex<Vec<(&'static Metadata<'static>, Fieldset)>>>,
    entered: Arc<Mutex<Vec<u64>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push((span.metadata(), fields));
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        let (_, fields) = &mut spans[span.into_u64() as usize - 1];
        values.record(&mut Fields(fields));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, span: &Id) {
        self.entered.lock().unwrap().push(span.into_u64());
    }
    fn exit(&self, span: &Id) {
        let mut entered = self.entered.lock().unwrap();
        if let Some(at) = entered.iter().rposition(|id| *id == span.into_u64()) {
            entered.remove(at);
        }
    }
    fn current_span(&self) -> Current {
        match self.entered.lock().unwrap().last() {
            Some(&id) => Current::new(
                Id::from_u64(id),
                self.spans.lock().unwrap()[id as usize - 1].0,
            ),
            None => Current::none(),
        }
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(m, _)| m.name() == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn spans_carry_subsystem_member_epoch_and_key() {
    let spans = Spans::default();
    let _default = tracing::subscriber::set_default(spans.clone());
    let store = MemoryStore::new();
    let work = work_fn(|n: &u32| *n, |_: &u32, _: &WorkContext| async { true });
    let a = Managed::start("traced", fast(&store, "a"), work)
        .await
        .unwrap();
    let epoch = a.member().wait_for_master().await.unwrap();
    a.submit_work(42).await.unwrap();
    until(ms(1000), "the task done", || a.stats().finished == 1).await;
    tokio::time::sleep(ms(250)).await;
    a.shutdown().await.unwrap();

    let expect = |name: &str, extra: &[(&str, String)]| {
        let found = spans.named(name);
        assert!(!found.is_empty(), "no {name} span");
        for fields in &found {
            assert_eq!(
                fields.get("subsystem").map(String::as_str),
                Some("traced"),
                "{name}: {fields:?}"
            );
            assert_eq!(
                fields.get("member").map(String::as_str),
                Some("a"),
                "{name}: {fields:?}"
            );
            assert_eq!(
                fields.get("epoch"),
                Some(&epoch.to_string()),
                "{name}: {fields:?}"
            );
            for (k, v) in extra {
                assert_eq!(fields.get(*k), Some(v), "{name}: {fields:?}");
            }
        }
        found.len()
    };
    assert_eq!(expect("take_over", &[]), 1);
    assert!(expect("renew", &[]) >= 2);
    assert_eq!(expect("release", &[]), 1);
    assert_eq!(expect("task", &[("key", "42".to_owned())]), 1);
}
