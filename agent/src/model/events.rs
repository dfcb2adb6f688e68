//! Ring-buffer bytes → typed goroutine events. The only place raw event bytes are interpreted,
//! without `unsafe`: each field is read at its offset in the ABI struct.
use std::mem::offset_of;

use agent_ebpf::{EventKind, PARK_FRAMES, RawEvent};

/// Return addresses captured at a park, from gopark's caller outwards; 0 after the last.
pub type ReturnPcs = [u64; PARK_FRAMES];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record of {0} bytes, expected {expected}", expected = size_of::<RawEvent>())]
    Size(usize),
    #[error("unknown event kind {0}")]
    Kind(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoroutineEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub detail: EventDetail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventDetail {
    Created {
        parent_goid: u64,
        /// PC of the `go` statement (runtime address).
        creation_pc: u64,
        /// Entry PC of the goroutine's function (runtime address).
        start_pc: u64,
    },
    Parked {
        /// The runtime's numeric waitReason; names come from the binary's own table.
        wait_reason: u8,
        /// gopark's `lock` argument: `&hchan.lock` for channel operations, else runtime-internal.
        lock_addr: u64,
        /// The goroutine's `*g`, to read its stack and `g.waiting` from memory later.
        g_addr: u64,
        /// For semaphore waits (Mutex, RWMutex, WaitGroup, semacquire): the semaphore's address
        /// as `runtime.semacquire1` got it; 0 when not seen.
        sema_addr: u64,
        /// Runtime return addresses from gopark's caller outwards (0 after the last).
        return_pcs: ReturnPcs,
    },
    Ready {
        /// 0 when no user goroutine did the waking (scheduler, netpoller, timers).
        waker_goid: u64,
    },
    Exited,
}

impl GoroutineEvent {
    /// Whether `bytes` is a record [`GoroutineEvent::decode`] decodes (its size and kind), without
    /// decoding it.
    pub fn check(bytes: &[u8]) -> Result<EventKind, DecodeError> {
        if bytes.len() != size_of::<RawEvent>() {
            return Err(DecodeError::Size(bytes.len()));
        }
        let kind = Record(bytes).u8_at(offset_of!(RawEvent, kind));
        EventKind::from_u8(kind).ok_or(DecodeError::Kind(kind))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let kind = Self::check(bytes)?;
        let raw = Record(bytes);
        let detail = match kind {
            EventKind::Created => EventDetail::Created {
                parent_goid: raw.u64_at(offset_of!(RawEvent, peer_goid)),
                creation_pc: raw.u64_at(offset_of!(RawEvent, addr)),
                start_pc: raw.u64_at(offset_of!(RawEvent, aux)),
            },
            EventKind::Parked => EventDetail::Parked {
                wait_reason: raw.u8_at(offset_of!(RawEvent, wait_reason)),
                lock_addr: raw.u64_at(offset_of!(RawEvent, addr)),
                g_addr: raw.u64_at(offset_of!(RawEvent, aux)),
                sema_addr: raw.u64_at(offset_of!(RawEvent, sema_addr)),
                return_pcs: std::array::from_fn(|i| raw.u64_at(offset_of!(RawEvent, return_pcs) + 8 * i)),
            },
            EventKind::Ready => EventDetail::Ready { waker_goid: raw.u64_at(offset_of!(RawEvent, peer_goid)) },
            EventKind::Exited => EventDetail::Exited,
        };
        Ok(Self {
            ts_ns: raw.u64_at(offset_of!(RawEvent, ts_ns)),
            pid: raw.u32_at(offset_of!(RawEvent, pid)),
            tid: raw.u32_at(offset_of!(RawEvent, tid)),
            goid: raw.u64_at(offset_of!(RawEvent, goid)),
            detail,
        })
    }
}

/// A ring-buffer record of `size_of::<RawEvent>()` bytes, read field by field at the offsets of
/// `RawEvent`'s `repr(C)` layout, in native byte order (the kernel wrote it on this machine).
/// Records are only 8-byte aligned by convention, so nothing here assumes alignment.
struct Record<'a>(&'a [u8]);

impl Record<'_> {
    fn bytes<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.0[offset..offset + N]);
        out
    }

    fn u64_at(&self, offset: usize) -> u64 {
        u64::from_ne_bytes(self.bytes(offset))
    }

    fn u32_at(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.bytes(offset))
    }

    fn u8_at(&self, offset: usize) -> u8 {
        self.0[offset]
    }
}

/// Events as tests of the stages after decoding build them (pid 1, thread 1).
#[cfg(test)]
impl GoroutineEvent {
    /// `goid` parks for `wait_reason` with gopark's lock argument `lock_addr`; nothing else known.
    pub fn test_park(ts_ns: u64, goid: u64, wait_reason: u8, lock_addr: u64) -> Self {
        let detail = EventDetail::Parked { wait_reason, lock_addr, g_addr: 0, sema_addr: 0, return_pcs: Default::default() };
        Self { ts_ns, pid: 1, tid: 1, goid, detail }
    }

    pub fn test(ts_ns: u64, goid: u64, detail: EventDetail) -> Self {
        Self { ts_ns, pid: 1, tid: 1, goid, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(raw: &RawEvent) -> Vec<u8> {
        // SAFETY: RawEvent is repr(C) plain integers; viewing it as bytes is sound.
        unsafe { std::slice::from_raw_parts((raw as *const RawEvent).cast::<u8>(), size_of::<RawEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_each_kind() {
        let raw = RawEvent {
            ts_ns: 5,
            goid: 7,
            peer_goid: 1,
            addr: 0x4000,
            aux: 0x5000,
            pid: 42,
            tid: 43,
            kind: EventKind::Created as u8,
            ..Default::default()
        };
        let ev = GoroutineEvent::decode(&bytes_of(&raw)).unwrap();
        assert_eq!((ev.ts_ns, ev.pid, ev.tid, ev.goid), (5, 42, 43, 7));
        assert_eq!(ev.detail, EventDetail::Created { parent_goid: 1, creation_pc: 0x4000, start_pc: 0x5000 });
        let mut return_pcs = [0; PARK_FRAMES];
        return_pcs[..3].copy_from_slice(&[0x40_1000, 0x40_2000, 0x40_3000]);
        let parked = RawEvent { kind: EventKind::Parked as u8, wait_reason: 19, sema_addr: 0x6004, return_pcs, ..raw };
        assert_eq!(
            GoroutineEvent::decode(&bytes_of(&parked)).unwrap().detail,
            EventDetail::Parked { wait_reason: 19, lock_addr: 0x4000, g_addr: 0x5000, sema_addr: 0x6004, return_pcs }
        );
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(GoroutineEvent::decode(&[0u8; 3]), Err(DecodeError::Size(3)));
        let raw = RawEvent { kind: 99, ..Default::default() };
        assert_eq!(GoroutineEvent::decode(&bytes_of(&raw)), Err(DecodeError::Kind(99)));
    }
}
