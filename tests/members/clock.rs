//! `CLOCK_MONOTONIC` in nanoseconds: the clock of every line of the members'
//! logs, shared by the member binary and the tests that read the logs.

/// `CLOCK_MONOTONIC` in nanoseconds (one clock for all processes on the machine;
/// libfaketime leaves it alone with `FAKETIME_DONT_FAKE_MONOTONIC=1`).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
