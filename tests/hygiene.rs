//! The expansion of `#[failover::subsystem]` depends on nothing in the caller's
//! scope: no prelude, no imports, and local items named like the ones it uses do
//! not get in its way. The crate's path, renamed, is written once, on the struct.

extern crate failover as fo;

mod subsystem {
    #![no_implicit_prelude]
    #![allow(dead_code)]

    // Local items named like what the expansion uses.
    pub struct Option;
    pub struct Result;
    pub struct Bson;
    pub struct Outcome;
    pub struct Options;
    pub trait Future {}
    pub trait Send {}
    pub trait Work {}
    pub trait Hooks {}
    pub trait Subsystem {}
    pub trait Clone {}
    pub fn to_key() {}
    pub fn into_outcome() {}
    pub mod core {}
    pub mod std {}
    pub mod failover {}
    pub mod serde {}
    pub mod bson {}
    pub mod __failover {}
    pub mod __private {}

    #[derive(::serde::Serialize)]
    pub struct Job {
        pub id: u64,
        pub group: ::std::string::String,
    }

    #[derive(::serde::Serialize, ::core::clone::Clone)]
    pub struct Batch {
        pub jobs: ::std::vec::Vec<u64>,
    }

    pub fn batch_key(batch: &Batch) -> u64 {
        ::core::iter::Iterator::sum(batch.jobs.iter())
    }

    #[::failover::subsystem(name = "hygiene", key = "id")]
    pub struct Jobs {
        pub done: ::std::sync::atomic::AtomicU64,
        pub epoch: ::std::sync::atomic::AtomicU64,
    }

    #[::failover::subsystem]
    impl Jobs {
        #[work]
        async fn run(
            &self,
            job: &Job,
            ctx: &::failover::WorkContext,
        ) -> ::std::result::Result<bool, ::std::string::String> {
            let _ = (&job.group, ctx.attempt());
            self.done
                .fetch_add(1, ::std::sync::atomic::Ordering::SeqCst);
            ::std::result::Result::Ok(true)
        }

        #[on_master]
        fn leading(&self, epoch: u64) {
            self.epoch
                .store(epoch, ::std::sync::atomic::Ordering::SeqCst);
        }

        #[on_slave]
        async fn following(&self, epoch: u64) {
            let _ = epoch;
        }

        #[on_synchronize]
        async fn synchronized(&self, id: ::failover::bson::Bson) {
            let _ = id;
        }

        #[on_state_change]
        fn changed(&self, old: ::failover::State, new: ::failover::State) {
            let _ = (old, new);
        }

        #[on_error]
        async fn failed(&self, error: ::failover::Error) {
            let _ = error;
        }
    }

    #[::failover::subsystem(name = "hygiene-batches", key_fn = batch_key)]
    pub struct Batches;

    #[::failover::subsystem]
    impl Batches {
        #[failover::work]
        async fn run(&self, batch: Batch, ctx: ::failover::WorkContext) {
            let _ = (&batch.jobs, ctx.epoch());
        }
    }

    /// A subsystem whose every part comes through `macro_rules!`.
    macro_rules! subsystem_of {
        ($ty:ident, $name:literal, $key:literal, $task:ty, $ret:ty) => {
            #[::failover::subsystem(name = $name, key = $key)]
            pub struct $ty;

            #[::failover::subsystem]
            impl $ty {
                #[work]
                async fn run(&self, task: $task) -> $ret {
                    let _ = task;
                    ::core::default::Default::default()
                }
            }
        };
    }

    subsystem_of!(FromMacro, "from-macro", "id", &Job, bool);

    /// Declared in one module and implemented in another, which imports it; the
    /// crate renamed, and its path given once, on the struct.
    pub mod declared {
        #[::fo::subsystem(name = "hygiene-split", key = "group", crate = "::fo")]
        pub struct Split;
    }

    pub mod implemented {
        use super::declared::Split;

        #[::fo::subsystem]
        impl Split {
            #[fo::work]
            async fn run(&self, job: &super::Job) {
                let _ = job.id;
            }

            #[fo::on_master]
            fn leading(&self, epoch: u64) {
                let _ = epoch;
            }
        }
    }
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use failover::bson::Bson;
use failover::{MemoryStore, Options, Work};

#[test]
fn keys_come_from_the_named_field_and_the_key_function() {
    let jobs = subsystem::Jobs {
        done: AtomicU64::new(0),
        epoch: AtomicU64::new(0),
    };
    let job = subsystem::Job {
        id: 7,
        group: "g".into(),
    };
    assert_eq!(jobs.key(&job), Bson::Int64(7));
    let batch = subsystem::Batch {
        jobs: vec![1, 2, 3],
    };
    assert_eq!(subsystem::Batches.key(&batch), Bson::Int64(6));
    assert_eq!(<subsystem::Jobs as failover::Subsystem>::NAME, "hygiene");
    assert_eq!(subsystem::FromMacro.key(&job), Bson::Int64(7));
    assert_eq!(
        <subsystem::FromMacro as failover::Subsystem>::NAME,
        "from-macro"
    );
    let split = subsystem::declared::Split;
    assert_eq!(split.key(&job), Bson::String("g".into()));
    assert_eq!(
        <subsystem::declared::Split as fo::Subsystem>::NAME,
        "hygiene-split"
    );
}

#[tokio::test]
async fn the_subsystem_runs() {
    let store = MemoryStore::new();
    let jobs = subsystem::Jobs {
        done: AtomicU64::new(0),
        epoch: AtomicU64::new(0),
    }
    .start(Options::new().in_memory(&store))
    .await
    .unwrap();
    assert_eq!(jobs.member().wait_for_master().await.unwrap(), 1);
    for id in 1..=3 {
        jobs.submit_work(subsystem::Job {
            id,
            group: "g".into(),
        })
        .await
        .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while jobs.stats().finished < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("three tasks done within 10 s");
    jobs.shutdown().await.unwrap();

    let batches = subsystem::Batches
        .start(Options::new().in_memory(&store))
        .await
        .unwrap();
    batches
        .submit_work(subsystem::Batch { jobs: vec![1] })
        .await
        .unwrap();
    batches.shutdown().await.unwrap();
    let _ = Ordering::SeqCst;
}
