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
/// Default ring buffer size in bytes (a power of two multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 1 << 22;
/// Most processes one agent watches at once.
pub const MAX_TARGETS: u32 = 1024;

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
    assert!(core::mem::size_of::<RawEvent>() == 56);
    assert!(core::mem::size_of::<TargetConfig>() == 24);
};
