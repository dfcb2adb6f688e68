//! Goroutine and channel state of one process, rebuilt from events (and seeded from a memory
//! snapshot at attach). One owner mutates it; detectors and exporters read it.
//!
//! Goroutines are keyed by goid, never by `*g`: the runtime reuses g structs for new goroutines.
mod wait;

use std::collections::{BTreeSet, HashMap, HashSet};

pub use wait::{NOTIFY_LIST_LOCK, WaitClass, WaitReasons, is_synchronisation_internal, sync_function_class, sync_primitive};

use crate::model::{
    Location,
    events::{EventDetail, GoroutineEvent},
};

/// What a goroutine is doing, as far as goscope knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoState {
    Runnable,
    Running,
    Waiting,
    Syscall,
}

impl GoState {
    /// The state's name in output: `runnable`, `running`, `waiting`, `syscall`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Runnable => "runnable",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Syscall => "syscall",
        }
    }
}

/// Why and on what a goroutine waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub reason_code: u8,
    pub class: WaitClass,
    /// Channels it blocks on: one for send/receive; for a select, every case's channel once read
    /// from `g.waiting` in memory.
    pub channels: Vec<u64>,
    /// Address of the sync primitive (Mutex, RWMutex, WaitGroup) when known.
    pub lock: Option<u64>,
    /// Where it blocked, innermost frame first, once read from memory (the wait lasted long
    /// enough to matter). Empty until then.
    pub stack: Vec<Location>,
    /// Where the code blocked, from the return addresses the park probe captured.
    pub park_site: Option<Location>,
}

impl Wait {
    /// Where the code blocked: the innermost frame outside the runtime and the sync packages
    /// (the line that sends, receives, selects or locks), as captured at park, else from the
    /// stack read later. None when neither is known.
    pub fn site(&self) -> Option<&Location> {
        self.park_site.as_ref().or_else(|| self.stack.iter().find(|f| !is_synchronisation_internal(&f.function)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goroutine {
    pub goid: u64,
    pub state: GoState,
    /// When it entered `state` (CLOCK_MONOTONIC ns). For goroutines found blocked at attach this
    /// is only known when the GC recorded it; otherwise it is the attach time and
    /// `since_is_lower_bound` is set.
    pub since_ns: u64,
    pub since_is_lower_bound: bool,
    pub parent_goid: Option<u64>,
    /// `go` statement PC and entry PC of the goroutine's function (runtime addresses).
    pub creation_pc: Option<u64>,
    pub start_pc: Option<u64>,
    pub wait: Option<Wait>,
    /// The `*g` last seen, for memory reads (stacks, select cases). Valid while the goroutine lives.
    pub g_addr: Option<u64>,
    /// Timestamp of the newest event applied, for reconciling with a memory snapshot.
    pub last_event_ns: u64,
    /// What the last memory scan saw of its park (scan mode), to tell whether the next scan
    /// sees the same park.
    pub park_mark: Option<ParkMark>,
}

/// What memory shows of one park of a goroutine: two scans that see equal marks (see
/// [`ParkMark::same_park`]) saw a goroutine that did not run in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkMark {
    /// `*g`: the struct is reused for a new goroutine after an exit.
    pub g_addr: u64,
    pub reason_code: u8,
    /// Saved PC and SP (as a depth below the stack's top, which a stack copy keeps).
    pub resume_pc: u64,
    pub resume_depth: u64,
    /// `g.trackingSeq`: +1 (mod 256) on every transition out of running. None: not readable.
    pub tracking_seq: Option<u8>,
    /// `g.waitsince`: zeroed whenever the goroutine is scheduled, set by a GC to its start while
    /// it waits (0: not set).
    pub gc_wait_since: u64,
}

impl ParkMark {
    /// Whether `later` (a newer scan) saw the same park as `self`: the goroutine stayed parked
    /// in between. Without `trackingSeq` nothing proves that, so the answer is no (the wait then
    /// counts from the newer read: a lower bound, never a wait that never happened). A run and a
    /// new park at the same place changes trackingSeq; 256 of them between two scans would wrap
    /// it, but not `waitsince` once a GC stamped it, and a blocked finding needs the mark to
    /// hold over every scan of its threshold.
    pub fn same_park(&self, later: &ParkMark) -> bool {
        let gc_consistent = self.gc_wait_since == 0 || self.gc_wait_since == later.gc_wait_since;
        self.tracking_seq.is_some()
            && self.tracking_seq == later.tracking_seq
            && self.g_addr == later.g_addr
            && self.reason_code == later.reason_code
            && self.resume_pc == later.resume_pc
            && self.resume_depth == later.resume_depth
            && gc_consistent
    }
}

/// A channel goscope has seen goroutines block on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Channel {
    pub addr: u64,
    /// Buffer size, when read from memory.
    pub capacity: Option<u64>,
    /// Name of the element type ("int", "*main.Job"), when read from memory.
    pub element_type: Option<String>,
    pub closed: bool,
    pub blocked_senders: BTreeSet<u64>,
    pub blocked_receivers: BTreeSet<u64>,
    /// Goroutines seen operating on it (blocking on it, or waking one of its waiters); capped.
    pub operators: BTreeSet<u64>,
    /// When a goroutine last blocked on it.
    pub last_blocked_ns: u64,
}

/// Most operators remembered per channel; enough to judge "every counterpart is gone".
const MAX_OPERATORS: usize = 256;
/// A channel nobody has blocked on for this long is forgotten (a program that makes a channel
/// per request would otherwise grow the table forever).
const CHANNEL_IDLE_NS: u64 = 300_000_000_000;

/// One goroutine as a memory snapshot saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotGoroutine {
    pub goid: u64,
    pub state: GoState,
    pub wait: Option<Wait>,
    /// CLOCK_MONOTONIC ns the runtime recorded for the start of the wait (0: unknown).
    pub wait_since_ns: u64,
    pub parent_goid: Option<u64>,
    pub creation_pc: Option<u64>,
    pub start_pc: Option<u64>,
    pub g_addr: u64,
    /// Set for a waiting goroutine when the read could tell its park apart (scan mode).
    pub park_mark: Option<ParkMark>,
}

/// A change worth telling exporters about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A goroutine that had been waiting was made runnable: one blocking episode ended.
    Unblocked {
        goid: u64,
        wait: Wait,
        since_ns: u64,
        until_ns: u64,
        waker_goid: u64,
    },
    Exited {
        goid: u64,
        created_ns: Option<u64>,
        exited_ns: u64,
        parent_goid: Option<u64>,
    },
}

#[derive(Debug)]
pub struct ProcessState {
    pub pid: u32,
    reasons: WaitReasons,
    /// `hchan.lock` offset: gopark's lock argument minus this is the channel.
    hchan_lock: u64,
    goroutines: HashMap<u64, Goroutine>,
    channels: HashMap<u64, Channel>,
    /// Creation time of goroutines created since attach.
    created_ns: HashMap<u64, u64>,
    /// goid → exit time, kept until a snapshot is reconciled so it cannot resurrect them.
    exited: HashMap<u64, u64>,
    /// A snapshot was reconciled: exits need no remembering any more (`exited` would only grow).
    reconciled: bool,
}

impl ProcessState {
    pub fn new(pid: u32, reasons: WaitReasons, hchan_lock: u32) -> Self {
        Self {
            pid,
            reasons,
            hchan_lock: u64::from(hchan_lock),
            goroutines: HashMap::new(),
            channels: HashMap::new(),
            created_ns: HashMap::new(),
            exited: HashMap::new(),
            reconciled: false,
        }
    }

    pub fn goroutines(&self) -> impl Iterator<Item = &Goroutine> {
        self.goroutines.values()
    }

    pub fn goroutine(&self, goid: u64) -> Option<&Goroutine> {
        self.goroutines.get(&goid)
    }

    pub fn channel(&self, addr: u64) -> Option<&Channel> {
        self.channels.get(&addr)
    }

    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels.values()
    }

    pub fn reasons(&self) -> &WaitReasons {
        &self.reasons
    }

    /// Applies one event; returns what ended, if anything.
    pub fn apply(&mut self, ev: &GoroutineEvent) -> Option<Transition> {
        match ev.detail {
            EventDetail::Created { parent_goid, creation_pc, start_pc } => {
                self.created_ns.insert(ev.goid, ev.ts_ns);
                self.exited.remove(&ev.goid);
                let g = self.entry(ev.goid, ev.ts_ns);
                g.state = GoState::Runnable;
                g.since_ns = ev.ts_ns;
                g.since_is_lower_bound = false;
                g.parent_goid = Some(parent_goid);
                g.creation_pc = Some(creation_pc);
                g.start_pc = Some(start_pc);
                None
            }
            EventDetail::Parked { wait_reason, lock_addr, g_addr, .. } => {
                let class = self.reasons.class(wait_reason);
                let channels = match class {
                    WaitClass::ChanSend | WaitClass::ChanReceive if lock_addr > self.hchan_lock => {
                        vec![lock_addr - self.hchan_lock]
                    }
                    _ => Vec::new(),
                };
                self.leave_channels(ev.goid);
                for &c in &channels {
                    let ch = self.channels.entry(c).or_insert_with(|| Channel { addr: c, ..Channel::default() });
                    if class == WaitClass::ChanSend {
                        ch.blocked_senders.insert(ev.goid);
                    } else {
                        ch.blocked_receivers.insert(ev.goid);
                    }
                    remember_operator(ch, ev.goid);
                    ch.last_blocked_ns = ev.ts_ns;
                }
                let g = self.entry(ev.goid, ev.ts_ns);
                g.state = GoState::Waiting;
                g.since_ns = ev.ts_ns;
                g.since_is_lower_bound = false;
                g.g_addr = Some(g_addr);
                // A park no scan saw: the next scan (scan mode) counts it from its own read.
                g.park_mark = None;
                g.wait = Some(Wait { reason_code: wait_reason, class, channels, lock: None, stack: Vec::new(), park_site: None });
                None
            }
            EventDetail::Ready { waker_goid } => {
                let waits = self.leave_channels(ev.goid);
                if waker_goid != 0 {
                    for c in waits.iter().flat_map(|w| &w.channels) {
                        if let Some(ch) = self.channels.get_mut(c) {
                            remember_operator(ch, waker_goid);
                        }
                    }
                }
                let g = self.entry(ev.goid, ev.ts_ns);
                let was = (g.state == GoState::Waiting).then(|| (g.since_ns, g.wait.take()));
                g.state = GoState::Runnable;
                g.since_ns = ev.ts_ns;
                g.since_is_lower_bound = false;
                g.wait = None;
                match was {
                    Some((since_ns, Some(wait))) => {
                        Some(Transition::Unblocked { goid: ev.goid, wait, since_ns, until_ns: ev.ts_ns, waker_goid })
                    }
                    _ => None,
                }
            }
            EventDetail::Exited => {
                self.leave_channels(ev.goid);
                let g = self.goroutines.remove(&ev.goid);
                if !self.reconciled {
                    self.exited.insert(ev.goid, ev.ts_ns);
                }
                Some(Transition::Exited {
                    goid: ev.goid,
                    created_ns: self.created_ns.remove(&ev.goid),
                    exited_ns: ev.ts_ns,
                    parent_goid: g.and_then(|g| g.parent_goid),
                })
            }
        }
    }

    /// Merges a memory snapshot read after the probes were attached (`read_start_ns` is when the
    /// read began). Events newer than the read win; goroutines that exited meanwhile stay gone.
    pub fn reconcile(&mut self, snapshot: &[SnapshotGoroutine], read_start_ns: u64) {
        for s in snapshot {
            if self.exited.contains_key(&s.goid) {
                continue;
            }
            if self.goroutines.get(&s.goid).is_some_and(|g| g.last_event_ns >= read_start_ns) {
                continue;
            }
            let known_since = s.wait_since_ns != 0 && s.wait_since_ns <= read_start_ns;
            let g = Goroutine {
                goid: s.goid,
                state: s.state,
                since_ns: if known_since { s.wait_since_ns } else { read_start_ns },
                since_is_lower_bound: !known_since,
                parent_goid: s.parent_goid,
                creation_pc: s.creation_pc,
                start_pc: s.start_pc,
                wait: s.wait.clone(),
                g_addr: Some(s.g_addr),
                last_event_ns: 0,
                park_mark: s.park_mark,
            };
            if let Some(wait) = &g.wait {
                for &c in &wait.channels {
                    let ch = self.channels.entry(c).or_insert_with(|| Channel { addr: c, ..Channel::default() });
                    match wait.class {
                        WaitClass::ChanSend => ch.blocked_senders.insert(s.goid),
                        WaitClass::ChanReceive => ch.blocked_receivers.insert(s.goid),
                        _ => false,
                    };
                    remember_operator(ch, s.goid);
                    ch.last_blocked_ns = ch.last_blocked_ns.max(read_start_ns);
                }
            }
            self.goroutines.insert(s.goid, g);
        }
        self.exited.clear();
        self.reconciled = true;
    }

    /// Repairs what lost events may have left wrong, from a memory snapshot read after the loss
    /// (`read_start_ns` is when the read began). A goroutine with an event newer than the read
    /// keeps the events' view. Any other: gone from memory means it exited (its exit event was
    /// lost); listed means memory's view, with a wait counted from the read, a lower bound, even
    /// if the state saw it park earlier (a lost wake-up and park in between would otherwise make
    /// one wait of two and a blocked finding out of a goroutine that made progress).
    pub fn resync(&mut self, snapshot: &[SnapshotGoroutine], read_start_ns: u64) {
        let listed: HashSet<u64> = snapshot.iter().map(|s| s.goid).collect();
        let stale: Vec<u64> = self.goroutines.values().filter(|g| g.last_event_ns < read_start_ns).map(|g| g.goid).collect();
        for goid in stale {
            self.leave_channels(goid);
            self.goroutines.remove(&goid);
            if !listed.contains(&goid) {
                self.created_ns.remove(&goid);
            }
        }
        // The runtime's wait start is only a GC's timestamp: counted from the read instead.
        let fresh: Vec<SnapshotGoroutine> = snapshot
            .iter()
            .filter(|s| !self.goroutines.contains_key(&s.goid))
            .map(|s| SnapshotGoroutine { wait_since_ns: 0, ..s.clone() })
            .collect();
        self.reconcile(&fresh, read_start_ns);
    }

    /// Merges one periodic memory scan when no probe reports events (scan mode; `read_start_ns`
    /// is when the read began). Memory is the whole truth: a goroutine the scan does not list
    /// has exited. One it lists keeps its wait, and when the wait began, only when both scans saw
    /// the same park ([`ParkMark::same_park`]); otherwise its state counts from this read (a
    /// lower bound), so a worker that ran and parked again at the same line never accumulates.
    pub fn merge_scan(&mut self, scan: &[SnapshotGoroutine], read_start_ns: u64) {
        let listed: HashMap<u64, &SnapshotGoroutine> = scan.iter().map(|s| (s.goid, s)).collect();
        let changed: Vec<u64> = self
            .goroutines
            .values()
            .filter(|g| listed.get(&g.goid).is_none_or(|s| !stayed_parked(g, s)))
            .map(|g| g.goid)
            .collect();
        for goid in changed {
            self.leave_channels(goid);
            self.goroutines.remove(&goid);
            if !listed.contains_key(&goid) {
                self.created_ns.remove(&goid);
            }
        }
        // The newer mark: a GC stamp it carries now must still be there at the next scan.
        for s in scan {
            if let Some(g) = self.goroutines.get_mut(&s.goid) {
                g.park_mark = s.park_mark;
            }
        }
        let fresh: Vec<SnapshotGoroutine> = scan
            .iter()
            .filter(|s| !self.goroutines.contains_key(&s.goid))
            .map(|s| SnapshotGoroutine { wait_since_ns: 0, ..s.clone() })
            .collect();
        self.reconcile(&fresh, read_start_ns);
    }

    /// Records what memory showed about a blocked goroutine later: a select's channels, the sync
    /// primitive and its kind (`class`, from the stack), where it blocked.
    pub fn enrich_wait(&mut self, goid: u64, class: WaitClass, channels: &[u64], lock: Option<u64>, stack: Vec<Location>) {
        let Some(g) = self.goroutines.get_mut(&goid) else {
            return;
        };
        let Some(wait) = g.wait.as_mut() else { return };
        // Before Go 1.21 every sync wait is "semacquire": the stack names the primitive.
        if wait.class == WaitClass::Semaphore {
            wait.class = class;
        }
        wait.lock = wait.lock.or(lock);
        if !stack.is_empty() {
            wait.stack = stack;
        }
        for &c in channels {
            if !wait.channels.contains(&c) {
                wait.channels.push(c);
            }
            let ch = self.channels.entry(c).or_insert_with(|| Channel { addr: c, ..Channel::default() });
            remember_operator(ch, goid);
        }
    }

    /// Records what the park event told beyond the state's own view, once the caller resolved it
    /// with the binary: where the goroutine blocked, and the sync primitive.
    pub fn set_park_details(&mut self, goid: u64, park_site: Option<Location>, lock: Option<u64>) {
        if let Some(wait) = self.goroutines.get_mut(&goid).and_then(|g| g.wait.as_mut()) {
            wait.park_site = park_site;
            wait.lock = lock;
        }
    }

    pub fn set_channel_info(&mut self, addr: u64, capacity: u64, closed: bool, element_type: Option<String>) {
        let ch = self.channels.entry(addr).or_insert_with(|| Channel { addr, ..Channel::default() });
        ch.capacity = Some(capacity);
        ch.closed = closed;
        ch.element_type = element_type.or(ch.element_type.take());
    }

    /// Forgets channels nobody waits on whose operators have all exited or that have been idle
    /// for CHANNEL_IDLE_NS, and exited goroutines among the operators of the rest.
    ///
    /// A channel a current wait names is kept, whatever the events said: a select's other
    /// channels are known only from memory (no park event blocks on them), and forgetting a
    /// `time.After` channel's type would turn a timer wait into a `blocked` finding.
    pub fn prune_channels(&mut self, now_ns: u64) {
        let live = &self.goroutines;
        let in_a_wait: HashSet<u64> =
            live.values().filter_map(|g| g.wait.as_ref()).flat_map(|w| w.channels.iter().copied()).collect();
        self.channels.retain(|addr, ch| {
            ch.operators.retain(|g| live.contains_key(g));
            let waited_on = !ch.blocked_senders.is_empty() || !ch.blocked_receivers.is_empty() || in_a_wait.contains(addr);
            waited_on || (!ch.operators.is_empty() && now_ns.saturating_sub(ch.last_blocked_ns) < CHANNEL_IDLE_NS)
        });
    }

    /// Blocked goroutines whose park stack has not been read yet and that have waited since at
    /// most `since_ns`: (goid, `*g`).
    pub fn needing_stacks(&self, since_ns: u64, max: usize) -> Vec<(u64, u64)> {
        self.goroutines
            .values()
            .filter(|g| g.since_ns <= since_ns)
            .filter(|g| g.wait.as_ref().is_some_and(|w| w.class.is_user_blocking() && w.stack.is_empty()))
            .filter_map(|g| Some((g.goid, g.g_addr?)))
            .take(max)
            .collect()
    }

    fn entry(&mut self, goid: u64, ts_ns: u64) -> &mut Goroutine {
        let g = self.goroutines.entry(goid).or_insert_with(|| Goroutine {
            goid,
            state: GoState::Running,
            since_ns: ts_ns,
            since_is_lower_bound: true,
            parent_goid: None,
            creation_pc: None,
            start_pc: None,
            wait: None,
            g_addr: None,
            last_event_ns: ts_ns,
            park_mark: None,
        });
        g.last_event_ns = g.last_event_ns.max(ts_ns);
        g
    }

    /// Removes `goid` from the waiter sets of the channels it was blocked on.
    fn leave_channels(&mut self, goid: u64) -> Option<Wait> {
        let wait = self.goroutines.get(&goid)?.wait.clone()?;
        for c in &wait.channels {
            if let Some(ch) = self.channels.get_mut(c) {
                ch.blocked_senders.remove(&goid);
                ch.blocked_receivers.remove(&goid);
            }
        }
        Some(wait)
    }
}

/// Whether a goroutine the state knows from a scan is, in a newer scan `s`, still in the same
/// park.
fn stayed_parked(g: &Goroutine, s: &SnapshotGoroutine) -> bool {
    g.state == GoState::Waiting
        && s.state == GoState::Waiting
        && g.g_addr == Some(s.g_addr)
        && matches!((&g.park_mark, &s.park_mark), (Some(a), Some(b)) if a.same_park(b))
}

fn remember_operator(ch: &mut Channel, goid: u64) {
    if ch.operators.len() < MAX_OPERATORS || ch.operators.contains(&goid) {
        ch.operators.insert(goid);
    }
}

#[cfg(test)]
mod tests;
