//! The kernel/user ABI of goscope, declared once and used by both sides.
//!
//! Every type is `#[repr(C)]`, `Copy`, made of fixed-width integers with explicit padding, so its
//! layout is the same in the BPF object and in the agent.
#![no_std]

/// Name of the ring buffer map that carries [`RawEvent`]s to userspace.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array (one `u64` slot) counting events lost to a full ring buffer.
pub const LOST_MAP: &str = "LOST";
/// Name of the hash map `pid (tgid) -> TargetConfig`; probes ignore processes not in it.
pub const TARGETS_MAP: &str = "TARGETS";
/// Name of the BPF global (u64) holding the unread bytes at which probes wake the reader.
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";
/// Default ring buffer size in bytes (a power of two multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 1 << 22;
/// Most processes one agent watches at once.
pub const MAX_TARGETS: u32 = 1024;
/// Return addresses a park event carries, from gopark's caller outwards: enough to pass the
/// runtime and sync frames of the deepest blocking path (a Mutex inside RWMutex.Lock: semacquire1,
/// runtime_SemacquireMutex, lockSlow, Mutex.Lock, RWMutex.Lock) and reach the user's call site.
pub const PARK_FRAMES: usize = 8;

/// Where gopark's return address is when its probe fires ([`TargetConfig::park_return_address`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnAddress {
    /// Unknown: the probe site is inside a prologue shape goscope does not know; no PCs.
    Unknown = 0,
    /// At `[RSP]`: the probe is before gopark pushes RBP (Go >= 1.21: at the `PUSH RBP`); RBP is
    /// still the caller's frame pointer.
    AtStackPointer = 1,
    /// At `[RBP+8]`: gopark's frame is set up (Go 1.19/1.20: after `LEA RBP, [RSP+n]`).
    AboveFramePointer = 2,
}

/// What happened to a goroutine. Stored as `u8` in [`RawEvent::kind`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `runtime.newproc1` returned a new goroutine.
    Created = 1,
    /// `runtime.gopark`: the goroutine is about to block.
    Parked = 2,
    /// `runtime.ready`: a parked goroutine was made runnable.
    Ready = 3,
    /// `runtime.goexit1`: the goroutine's function returned.
    Exited = 4,
}

impl EventKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Created),
            2 => Some(Self::Parked),
            3 => Some(Self::Ready),
            4 => Some(Self::Exited),
            _ => None,
        }
    }
}

/// One goroutine event as the probes emit it. Field meaning per kind:
///
/// | field       | Created             | Parked                       | Ready                   | Exited |
/// |-------------|---------------------|------------------------------|-------------------------|--------|
/// | `goid`      | new goroutine       | parking goroutine            | woken goroutine         | exiting |
/// | `peer_goid` | creator             | –                            | waker (0: scheduler)    | –      |
/// | `addr`      | `go` statement PC   | gopark's `lock` argument     | –                       | –      |
/// | `aux`       | goroutine entry PC  | the parking `*g` (for later memory reads) | –          | –      |
/// | `wait_reason` | –                 | runtime's numeric waitReason | –                       | –      |
/// | `sema_addr` | –                   | semacquire1's `addr` for semaphore-class reasons (0: none) | – | – |
/// | `return_pcs` | –                  | return addresses from gopark's caller out (0 ends) | –  | –      |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub goid: u64,
    pub peer_goid: u64,
    pub addr: u64,
    pub aux: u64,
    /// Process id (tgid) as the root PID namespace sees it.
    pub pid: u32,
    /// Thread id that hit the probe.
    pub tid: u32,
    pub kind: u8,
    pub wait_reason: u8,
    pub _pad: [u8; 6],
    pub sema_addr: u64,
    pub return_pcs: [u64; PARK_FRAMES],
}

/// Byte offsets of the runtime fields the probes read, for one target process. Written by the
/// agent from the target binary's DWARF (or a version table for stripped binaries).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetConfig {
    pub g_goid: u32,
    /// 0 when the runtime has no `g.parentGoid` (Go < 1.21); the creator's goid is used instead.
    pub g_parent_goid: u32,
    pub g_m: u32,
    pub g_gopc: u32,
    pub g_startpc: u32,
    pub m_curg: u32,
    /// A [`ReturnAddress`]: how the gopark probe finds the first return address.
    pub park_return_address: u32,
    pub _pad: u32,
    /// Bit `n` set: wait reason code `n` parks in `runtime.semacquire1` (Mutex, RWMutex,
    /// WaitGroup, semacquire), so the gopark probe takes that goroutine's semaphore address.
    pub sema_wait_reasons: [u64; 4],
    /// Probe hits in this process, indexed by [`ProbeHit`]: counted by the probes (every CPU adds
    /// to the same slot, not atomically: a slight underestimate), read by the agent to know what
    /// watching costs the target.
    /// The agent writes zeros when it attaches.
    pub hits: [u64; PROBE_HIT_SLOTS],
    /// Hits in this process whose probe could not read what it needed from the target's memory
    /// (or store it), and so dropped its event, indexed by [`ProbeHit`]: an offset that is wrong
    /// for the target's Go release shows up here at once. Counted as `hits` are.
    pub read_failures: [u64; PROBE_HIT_SLOTS],
}

/// Slots of [`TargetConfig::hits`].
pub const PROBE_HIT_SLOTS: usize = 5;

/// Which probe a [`TargetConfig::hits`] slot counts.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeHit {
    Created = 0,
    Parked = 1,
    Ready = 2,
    Exited = 3,
    SemaphoreAcquire = 4,
}

impl ProbeHit {
    /// Every slot, in slot order.
    pub const ALL: [ProbeHit; PROBE_HIT_SLOTS] =
        [ProbeHit::Created, ProbeHit::Parked, ProbeHit::Ready, ProbeHit::Exited, ProbeHit::SemaphoreAcquire];

    /// The name of the probe's program (without the `_multi` of its uprobe.multi twin).
    pub const fn program_name(self) -> &'static str {
        match self {
            ProbeHit::Created => "goroutine_created",
            ProbeHit::Parked => "goroutine_parked",
            ProbeHit::Ready => "goroutine_ready",
            ProbeHit::Exited => "goroutine_exited",
            ProbeHit::SemaphoreAcquire => "semaphore_acquire",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are repr(C) structs of plain integers with explicit padding: any bytes are valid.
    unsafe impl aya::Pod for super::RawEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TargetConfig {}
}

/// Compile-time check that the layout has no implicit padding (both sides read the same bytes).
const _: () = {
    assert!(size_of::<RawEvent>() == 64 + 8 * PARK_FRAMES);
    assert!(size_of::<TargetConfig>() == 64 + 2 * 8 * PROBE_HIT_SLOTS);
};
