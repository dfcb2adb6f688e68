use super::*;
use crate::model::events::{EventDetail, GoroutineEvent};

const LOCK_OFF: u32 = 104;
const CHAN: u64 = 0xc000_1000;

fn reasons() -> WaitReasons {
    // Go 1.26 order for the codes used here.
    let mut names = vec![String::new(); 21];
    names[13] = "semacquire".into();
    names[14] = "sleep".into();
    names[18] = "select".into();
    names[19] = "chan receive".into();
    names[20] = "chan send".into();
    WaitReasons::new(names)
}

fn ev(ts_ns: u64, goid: u64, detail: EventDetail) -> GoroutineEvent {
    GoroutineEvent { ts_ns, pid: 1, tid: 1, goid, detail }
}

fn park(ts: u64, goid: u64, reason: u8, chan: u64) -> GoroutineEvent {
    ev(
        ts,
        goid,
        EventDetail::Parked {
            wait_reason: reason,
            lock_addr: chan + u64::from(LOCK_OFF),
            g_addr: 0x1000 + goid,
            sema_addr: 0,
            return_pcs: Default::default(),
        },
    )
}

#[test]
fn a_blocking_episode_starts_at_park_and_ends_at_ready() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.apply(&ev(10, 7, EventDetail::Created { parent_goid: 1, creation_pc: 0x40, start_pc: 0x50 }));
    st.apply(&park(20, 7, 19, CHAN));
    let g = st.goroutine(7).unwrap();
    assert_eq!(g.state, GoState::Waiting);
    assert_eq!(g.wait.as_ref().unwrap().channels, vec![CHAN]);
    assert!(st.channel(CHAN).unwrap().blocked_receivers.contains(&7));

    let t = st.apply(&ev(50, 7, EventDetail::Ready { waker_goid: 1 }));
    match t {
        Some(Transition::Unblocked { goid: 7, since_ns: 20, until_ns: 50, waker_goid: 1, wait }) => {
            assert_eq!(wait.class, WaitClass::ChanReceive)
        }
        other => panic!("unexpected {other:?}"),
    }
    let ch = st.channel(CHAN).unwrap();
    assert!(ch.blocked_receivers.is_empty());
    assert_eq!(ch.operators, BTreeSet::from([1, 7]));
    assert_eq!(st.goroutine(7).unwrap().state, GoState::Runnable);
}

#[test]
fn exit_removes_the_goroutine_and_reports_its_lifetime() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.apply(&ev(10, 7, EventDetail::Created { parent_goid: 1, creation_pc: 0x40, start_pc: 0x50 }));
    let t = st.apply(&ev(90, 7, EventDetail::Exited));
    assert_eq!(t, Some(Transition::Exited { goid: 7, created_ns: Some(10), exited_ns: 90, parent_goid: Some(1) }));
    assert!(st.goroutine(7).is_none());
}

#[test]
fn non_channel_parks_have_no_channel() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.apply(&park(5, 3, 14, 0x9999));
    let w = st.goroutine(3).unwrap().wait.clone().unwrap();
    assert_eq!(w.class, WaitClass::Sleep);
    assert!(w.channels.is_empty());
}

fn snap(goid: u64, class: WaitClass, chan: u64, since: u64) -> SnapshotGoroutine {
    SnapshotGoroutine {
        goid,
        state: GoState::Waiting,
        wait: Some(Wait { reason_code: 20, class, channels: vec![chan], lock: None, stack: Vec::new(), park_site: None }),
        wait_since_ns: since,
        parent_goid: Some(1),
        creation_pc: None,
        start_pc: None,
        g_addr: 0x2000,
        park_mark: None,
    }
}

#[test]
fn snapshot_fills_in_goroutines_blocked_before_attach() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.reconcile(&[snap(9, WaitClass::ChanSend, CHAN, 0), snap(10, WaitClass::ChanSend, CHAN, 400)], 1000);
    let g9 = st.goroutine(9).unwrap();
    assert!(g9.since_is_lower_bound);
    assert_eq!(g9.since_ns, 1000);
    let g10 = st.goroutine(10).unwrap();
    assert!(!g10.since_is_lower_bound);
    assert_eq!(g10.since_ns, 400);
    assert_eq!(st.channel(CHAN).unwrap().blocked_senders, BTreeSet::from([9, 10]));
}

#[test]
fn events_newer_than_the_snapshot_win_and_exits_stay_exited() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    // During the memory read (started at 1000): g9 woke up, g11 exited.
    st.apply(&ev(1500, 9, EventDetail::Ready { waker_goid: 4 }));
    st.apply(&ev(1600, 11, EventDetail::Exited));
    st.reconcile(&[snap(9, WaitClass::ChanSend, CHAN, 0), snap(11, WaitClass::ChanSend, CHAN, 0)], 1000);
    assert_eq!(st.goroutine(9).unwrap().state, GoState::Runnable);
    assert!(st.goroutine(11).is_none());
    assert!(st.channel(CHAN).is_none_or(|c| c.blocked_senders.is_empty()));
}

#[test]
fn resync_after_lost_events_trusts_memory_and_never_lengthens_a_wait() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.reconcile(&[], 100);
    // g9 parked at 200; its wake-up and second park were lost. g11 parked; its exit was lost.
    // g12 parked after the memory read began (3000): its event wins.
    st.apply(&park(200, 9, 19, CHAN));
    st.apply(&park(300, 11, 19, CHAN));
    st.apply(&park(3500, 12, 19, CHAN));
    let mut runnable = snap(13, WaitClass::Sleep, 0, 0);
    (runnable.state, runnable.wait) = (GoState::Runnable, None);
    st.resync(&[snap(9, WaitClass::ChanReceive, CHAN, 150), runnable, snap(12, WaitClass::ChanReceive, CHAN, 0)], 3000);
    let g9 = st.goroutine(9).unwrap();
    assert_eq!((g9.since_ns, g9.since_is_lower_bound), (3000, true), "counted from the read, not from the first park");
    assert!(st.goroutine(11).is_none(), "not in memory: exited");
    assert_eq!(st.goroutine(12).unwrap().since_ns, 3500);
    assert_eq!(st.goroutine(13).unwrap().state, GoState::Runnable);
    assert_eq!(st.channel(CHAN).unwrap().blocked_receivers, BTreeSet::from([9, 12]));
}

#[test]
fn exits_after_the_snapshot_are_not_remembered() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.reconcile(&[], 1000);
    for goid in 100..1100 {
        st.apply(&ev(2000 + goid, goid, EventDetail::Created { parent_goid: 1, creation_pc: 0x40, start_pc: 0x50 }));
        st.apply(&ev(3000 + goid, goid, EventDetail::Exited));
    }
    assert_eq!(st.goroutines().count(), 0);
    assert!(st.exited.is_empty() && st.created_ns.is_empty(), "a long session must not grow with every exit");
}

#[test]
fn select_channels_come_from_memory_later() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.apply(&ev(
        5,
        3,
        EventDetail::Parked { wait_reason: 18, lock_addr: 0, g_addr: 0x3000, sema_addr: 0, return_pcs: Default::default() },
    ));
    assert!(st.goroutine(3).unwrap().wait.as_ref().unwrap().channels.is_empty());
    assert_eq!(st.needing_stacks(10, 10), vec![(3, 0x3000)]);
    let frame = Location::new("main.f", "m.go", 3);
    st.enrich_wait(3, WaitClass::Select, &[0xa, 0xb], None, vec![frame]);
    assert_eq!(st.goroutine(3).unwrap().wait.as_ref().unwrap().channels, vec![0xa, 0xb]);
    assert!(st.needing_stacks(10, 10).is_empty(), "read once");
    assert!(st.channel(0xa).unwrap().operators.contains(&3));
}

#[test]
fn classes_follow_names_not_codes() {
    assert_eq!(WaitClass::of("chan receive (durable)"), WaitClass::ChanReceive);
    assert_eq!(WaitClass::of("select (no cases)"), WaitClass::Forever);
    assert_eq!(WaitClass::of("GC worker (idle)"), WaitClass::Runtime);
    assert!(!WaitClass::Sleep.is_user_blocking());
    assert!(WaitClass::Mutex.is_user_blocking());
}

#[test]
fn channels_are_forgotten_when_their_operators_exit_or_they_idle() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    const OTHER: u64 = 0xc000_2000;
    st.apply(&park(10, 7, 19, CHAN));
    st.apply(&ev(20, 7, EventDetail::Ready { waker_goid: 8 }));
    st.apply(&park(30, 9, 20, OTHER));
    st.prune_channels(40);
    assert!(st.channel(CHAN).is_some(), "its operators may still use it");
    assert_eq!(st.channel(CHAN).unwrap().operators, BTreeSet::from([7]), "8 was never seen alive");
    st.apply(&ev(50, 7, EventDetail::Exited));
    st.prune_channels(60);
    assert!(st.channel(CHAN).is_none(), "every operator exited");
    assert!(st.channel(OTHER).is_some(), "9 still waits on it");
    st.apply(&ev(70, 9, EventDetail::Ready { waker_goid: 0 }));
    st.prune_channels(80);
    assert!(st.channel(OTHER).is_some());
    st.prune_channels(30 + CHANNEL_IDLE_NS);
    assert!(st.channel(OTHER).is_none(), "idle too long");
}

/// A goroutine parked on CHAN as a scan sees it, with `seq` as its trackingSeq.
fn scanned(goid: u64, seq: Option<u8>, gc_wait_since: u64) -> SnapshotGoroutine {
    let mark =
        ParkMark { g_addr: 0x2000, reason_code: 20, resume_pc: 0x4_1000, resume_depth: 0x300, tracking_seq: seq, gc_wait_since };
    SnapshotGoroutine { park_mark: Some(mark), ..snap(goid, WaitClass::ChanSend, CHAN, 0) }
}

#[test]
fn a_park_seen_by_consecutive_scans_keeps_its_start() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.merge_scan(&[scanned(9, Some(7), 0)], 1000);
    st.merge_scan(&[scanned(9, Some(7), 0)], 2000);
    // A GC stamped waitsince in between: still the same park.
    st.merge_scan(&[scanned(9, Some(7), 1500)], 3000);
    let g = st.goroutine(9).unwrap();
    assert_eq!((g.since_ns, g.since_is_lower_bound), (1000, true));
    assert_eq!(st.channel(CHAN).unwrap().blocked_senders, BTreeSet::from([9]));
}

#[test]
fn a_worker_that_ran_and_parked_again_at_the_same_line_starts_over() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.merge_scan(&[scanned(9, Some(7), 0)], 1000);
    st.merge_scan(&[scanned(9, Some(8), 0)], 2000);
    assert_eq!(st.goroutine(9).unwrap().since_ns, 2000, "trackingSeq moved: it ran");
    st.merge_scan(&[scanned(9, Some(8), 1500)], 3000);
    st.merge_scan(&[scanned(9, Some(8), 2500)], 4000);
    assert_eq!(st.goroutine(9).unwrap().since_ns, 4000, "a second GC stamp: it ran in between (256 runs wrap trackingSeq)");
    let moved = SnapshotGoroutine {
        park_mark: scanned(9, Some(8), 2500).park_mark.map(|m| ParkMark { resume_depth: 0x400, ..m }),
        ..scanned(9, None, 0)
    };
    st.merge_scan(&[moved], 5000);
    assert_eq!(st.goroutine(9).unwrap().since_ns, 5000, "parked deeper in its stack: another park");
}

#[test]
fn without_tracking_seq_every_scan_is_a_new_lower_bound() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.merge_scan(&[scanned(9, None, 0)], 1000);
    st.merge_scan(&[scanned(9, None, 0)], 2000);
    assert_eq!(st.goroutine(9).unwrap().since_ns, 2000);
}

#[test]
fn a_scan_that_misses_a_goroutine_ends_it_and_frees_its_channel() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    st.merge_scan(&[scanned(9, Some(1), 0), scanned(10, Some(1), 0)], 1000);
    let running = SnapshotGoroutine { state: GoState::Running, wait: None, park_mark: None, ..scanned(10, None, 0) };
    st.merge_scan(&[running], 2000);
    assert!(st.goroutine(9).is_none(), "not listed: exited");
    let g10 = st.goroutine(10).unwrap();
    assert_eq!((g10.state, g10.since_ns), (GoState::Running, 2000));
    assert!(st.channel(CHAN).unwrap().blocked_senders.is_empty());
}

#[test]
fn a_selects_channels_read_from_memory_outlive_pruning_while_it_waits() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    const TIMER: u64 = 0xc000_3000;
    st.apply(&park(10, 3, 18, CHAN));
    st.enrich_wait(3, WaitClass::Select, &[CHAN, TIMER], None, vec![Location::new("main.loop", "m.go", 3)]);
    st.set_channel_info(TIMER, 1, false, Some("time.Time".into()));
    st.prune_channels(20 + CHANNEL_IDLE_NS);
    let timer = st.channel(TIMER).expect("the timer's channel is still waited on");
    assert_eq!((timer.capacity, timer.element_type.as_deref()), (Some(1), Some("time.Time")));
    st.apply(&ev(30 + CHANNEL_IDLE_NS, 3, EventDetail::Ready { waker_goid: 0 }));
    st.prune_channels(40 + 2 * CHANNEL_IDLE_NS);
    assert!(st.channel(TIMER).is_none(), "nobody waits on it any more");
}

#[test]
fn a_generic_semaphore_wait_takes_the_class_its_stack_names() {
    let mut st = ProcessState::new(1, reasons(), LOCK_OFF);
    let parked =
        EventDetail::Parked { wait_reason: 13, lock_addr: 0, g_addr: 0x3000, sema_addr: 0, return_pcs: Default::default() };
    st.apply(&ev(5, 3, parked));
    assert_eq!(st.goroutine(3).unwrap().wait.as_ref().unwrap().class, WaitClass::Semaphore);
    st.enrich_wait(3, WaitClass::Mutex, &[], Some(0x5000), vec![Location::new("sync.(*Mutex).Lock", "mutex.go", 1)]);
    let wait = st.goroutine(3).unwrap().wait.as_ref().unwrap();
    assert_eq!((wait.class, wait.lock), (WaitClass::Mutex, Some(0x5000)));
    // A class the reason already named is kept.
    st.apply(&park(10, 4, 19, CHAN));
    st.enrich_wait(4, WaitClass::Semaphore, &[], None, Vec::new());
    assert_eq!(st.goroutine(4).unwrap().wait.as_ref().unwrap().class, WaitClass::ChanReceive);
}
