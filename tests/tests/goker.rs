//! A smoke test of goscope's leak detection on GoKer kernels (real blocking bugs, see
//! tests/src/goker.rs) whose bug manifests on every run (measured: 5 of 5 runs, GOMAXPROCS=1 as the
//! runtime's own test runs them): goscope must report a leak or deadlock naming the goroutines the
//! runtime's leak profile says leaked. `cargo xtask goker` scores all the kernels.
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use goscope_tests::{goker, goscope_bin, require_bpf};

/// The kernels, each with the detector capability it relies on.
const KERNELS: [(&str, &str); 4] = [
    // A goroutine parked in chan send on a channel no other goroutine or global can reach (its
    // receiver returned): a proven leak by reachability.
    ("Grpc660", "channel reachability: the only holder of the channel is the blocked sender"),
    // A goroutine parked in sync.Cond.Wait on a cond only it can reach, and its parent in chan
    // receive on a channel only that waiter would send on: reachability through a cond and a chain.
    ("Moby30408", "cond + channel reachability, chain of two"),
    // A goroutine parked in RWMutex.Lock while the read lock is held by a goroutine that has
    // returned without RUnlock: lock ownership, the holder being gone.
    ("Etcd5509", "RWMutex whose read holder exited"),
    // Goroutines parked in Mutex.Lock on a mutex whose holder returned without unlocking (a missing
    // Unlock on an error path), and on nothing any live goroutine can release.
    ("Moby7559", "Mutex whose holder exited"),
];

#[test]
fn goscope_reports_the_leaks_of_deterministic_goker_kernels() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let goscope = goscope_bin()?;
    let binary = goker::build()?;
    let kernels = goker::kernels()?;
    let runs: Vec<Result<goker::KernelRun>> = thread::scope(|s| {
        let runs: Vec<_> = KERNELS
            .iter()
            .map(|(name, _)| {
                let kernel =
                    kernels.iter().find(|k| k.name == *name).with_context(|| format!("{name} is not in the runtime test"));
                let (goscope, binary) = (&goscope, &binary);
                s.spawn(move || goker::run_kernel(binary, goscope, kernel?, Duration::from_secs(20), Duration::from_secs(1)))
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("kernel thread")).collect()
    });
    let mut failures = Vec::new();
    for ((name, capability), run) in KERNELS.iter().zip(runs) {
        let run = run?;
        eprintln!(
            "{name}: {} leaked, {} named by {} leak/deadlock findings, detected after {:?}",
            run.leaked.len(),
            run.named_leaked(),
            run.findings.len(),
            run.time_to_detection
        );
        if !run.manifested() {
            failures.push(format!("{name}: the bug did not manifest (the runtime's leak profile is empty)"));
        } else if !run.detected() {
            let leaked: Vec<String> =
                run.leaked.values().map(|l| format!("{} [{}] {}", l.goid, l.wait_reason, l.function)).collect();
            failures.push(format!("{name} ({capability}): no leak/deadlock finding names a leaked goroutine: {leaked:?}"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
