//! `crate = "..."` written once, on the struct: the `impl` block finds it, also
//! in another module, through an import or a relative path, and markers may be
//! written with the renamed crate's name.
extern crate failover as fo;

mod model {
    #[derive(serde::Serialize)]
    pub struct Job {
        pub id: u64,
    }

    #[fo::subsystem(name = "renamed-once", key = "id", crate = "fo")]
    pub struct Renamed;

    #[fo::subsystem(name = "renamed-nested", key = "id", crate = "fo")]
    pub struct Nested;

    pub mod work {
        #[fo::subsystem]
        impl super::Nested {
            #[fo::work]
            async fn run(&self, job: &super::Job) {
                let _ = job.id;
            }
        }
    }
}

mod work {
    use crate::model::{Job, Renamed};

    #[fo::subsystem]
    impl Renamed {
        #[work]
        async fn run(&self, job: &Job, ctx: &fo::WorkContext) -> bool {
            job.id > ctx.epoch()
        }

        #[fo::on_master]
        fn leading(&self, _epoch: u64) {}
    }
}

// Giving it again, the same, is accepted.
#[fo::subsystem(name = "renamed-twice", key = "id", crate = "fo")]
struct Twice;

#[fo::subsystem(crate = "::fo")]
impl Twice {
    #[work]
    async fn run(&self, job: &model::Job) {
        let _ = job.id;
    }
}

fn main() {
    assert_eq!(<model::Renamed as fo::Subsystem>::NAME, "renamed-once");
    assert_eq!(<model::Nested as fo::Subsystem>::NAME, "renamed-nested");
    assert_eq!(<Twice as fo::Subsystem>::NAME, "renamed-twice");
}
