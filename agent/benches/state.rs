//! State model figures: events per second `ProcessState::apply` absorbs on one core, and memory
//! per tracked goroutine. Run by `cargo xtask bench`; prints figures, asserts nothing.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use goscope::model::{
    events::{EventDetail, GoroutineEvent},
    state::{ProcessState, WaitReasons},
};

/// Counts live heap bytes so the figure is measured, not estimated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn reasons() -> WaitReasons {
    let mut names = vec![String::new(); 21];
    names[19] = "chan receive".into();
    names[20] = "chan send".into();
    WaitReasons::new(names)
}

fn ev(ts_ns: u64, goid: u64, detail: EventDetail) -> GoroutineEvent {
    GoroutineEvent { ts_ns, pid: 1, tid: 1, goid, detail }
}

fn main() {
    const GOROUTINES: u64 = 100_000;
    let before = LIVE.load(Ordering::Relaxed);
    let mut state = ProcessState::new(1, reasons(), 104);
    for goid in 1..=GOROUTINES {
        state.apply(&ev(goid, goid, EventDetail::Created { parent_goid: 1, creation_pc: 0x40_0000, start_pc: 0x40_1000 }));
        // Spread waiters over 1,000 channels, as a busy service would.
        let lock_addr = 0xc000_0000 + (goid % 1000) * 0x80 + 104;
        state.apply(&ev(
            goid,
            goid,
            EventDetail::Parked {
                wait_reason: 19,
                lock_addr,
                g_addr: 0xc100_0000 + goid * 0x1c8,
                sema_addr: 0,
                return_pcs: Default::default(),
            },
        ));
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "state memory: {:.0} bytes per tracked goroutine ({GOROUTINES} goroutines blocked on 1,000 channels)",
        bytes as f64 / GOROUTINES as f64
    );

    // Steady churn: park/ready pairs over the existing goroutines, plus create/exit.
    const EVENTS: u64 = 4_000_000;
    let start = Instant::now();
    let mut ts = GOROUTINES;
    for i in 0..EVENTS / 4 {
        let goid = 1 + i % GOROUTINES;
        ts += 1;
        state.apply(&ev(ts, goid, EventDetail::Ready { waker_goid: 1 + (i + 1) % GOROUTINES }));
        let lock_addr = 0xc000_0000 + (i % 1000) * 0x80 + 104;
        state.apply(&ev(
            ts,
            goid,
            EventDetail::Parked { wait_reason: 20, lock_addr, g_addr: 0, sema_addr: 0, return_pcs: Default::default() },
        ));
        let fresh = GOROUTINES + 1 + i;
        state.apply(&ev(ts, fresh, EventDetail::Created { parent_goid: goid, creation_pc: 0x40_0000, start_pc: 0x40_1000 }));
        state.apply(&ev(ts, fresh, EventDetail::Exited));
    }
    let secs = start.elapsed().as_secs_f64();
    println!("state throughput: {:.2} M events/s on one core ({EVENTS} events in {secs:.2}s)", EVENTS as f64 / secs / 1e6);
}
