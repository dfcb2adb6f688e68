//! [`ProcessMemory`]: reads another process's memory while it keeps running.
//!
//! Reads go through `process_vm_readv(2)`: one syscall copies many scattered ranges (up to
//! `IOV_MAX` = 1024 per call), which is what makes reading 100,000 goroutines fast. When the
//! kernel refuses it (`ENOSYS`: built without cross-memory attach; `EPERM`: some LSM setups), reads
//! fall back to `pread` on `/proc/PID/mem`, one syscall per range.
//!
//! Nothing here stops or ptrace-attaches the target: what comes back is whatever the memory held
//! at the moment of the copy, and callers must validate it (see `snapshot`).
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;

use serde::Serialize;

use crate::sys;

/// Largest single range one request may ask for.
pub const MAX_REQUEST: usize = 64 << 20;
/// Default total read budget of a [`ProcessMemory`].
pub const DEFAULT_BUDGET: u64 = 2 << 30;
/// Ranges closer than this are read as one range (see [`ProcessMemory::read_batch`]).
pub const MERGE_GAP: u64 = 256;
/// Largest merged range.
const MERGE_MAX: usize = 1 << 20;
/// Ranges per `process_vm_readv` call (the kernel's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Why a read failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// There is no process `pid` (never was, or it exited before the first read).
    #[error("no process with PID {pid}")]
    NoSuchProcess {
        /// The process.
        pid: u32,
    },
    /// The process exited while being read.
    #[error("PID {pid} exited")]
    Exited {
        /// The process.
        pid: u32,
    },
    /// The kernel refused both `process_vm_readv` and `/proc/PID/mem`.
    #[error("cannot read the memory of PID {pid}: {source} (reading another process's memory needs root or CAP_SYS_PTRACE)")]
    Permission {
        /// The process.
        pid: u32,
        /// The refusal of the first read method.
        #[source]
        source: io::Error,
    },
    /// A range that had to be read whole is not (completely) mapped.
    #[error("PID {pid}: {len} bytes at {addr:#x} are not mapped")]
    Unmapped {
        /// The process.
        pid: u32,
        /// Start of the range.
        addr: u64,
        /// Its length in bytes.
        len: usize,
    },
    /// One range asked for more than [`MAX_REQUEST`] bytes.
    #[error("PID {pid}: refusing to read {len} bytes at once (limit {MAX_REQUEST})")]
    TooLarge {
        /// The process.
        pid: u32,
        /// The range's length in bytes.
        len: usize,
    },
    /// The reader's byte budget ([`ProcessMemory::with_budget`]) is spent.
    #[error("PID {pid}: the read budget of {limit} bytes is used up")]
    BudgetExceeded {
        /// The process.
        pid: u32,
        /// The budget in bytes.
        limit: u64,
    },
    /// Any other failure of the read calls.
    #[error("PID {pid}: {op}: {source}")]
    Io {
        /// The process.
        pid: u32,
        /// What was being done.
        op: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

impl MemoryError {
    /// True when the process is gone (it never existed, or exited).
    pub fn is_gone(&self) -> bool {
        matches!(self, MemoryError::NoSuchProcess { .. } | MemoryError::Exited { .. })
    }
}

/// Counters of one [`ProcessMemory`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// Bytes copied successfully.
    pub bytes: u64,
    /// `process_vm_readv` / `pread` calls.
    pub syscalls: u64,
    /// Ranges that could not be read (unmapped).
    pub failed_ranges: u64,
    /// True once reads go through `/proc/PID/mem`.
    pub proc_mem_fallback: bool,
}

/// Several ranges read at once: [`Batch::get`] gives each range's bytes, or None if any part of
/// it was unreadable.
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    /// (offset in `data`, length, read completely).
    spans: Vec<(usize, usize, bool)>,
}

impl Batch {
    /// An unread batch for `reqs`: room for each range's bytes, back to back; an empty range
    /// counts as read.
    fn sized_for(reqs: &[(u64, usize)]) -> Batch {
        let mut spans = Vec::with_capacity(reqs.len());
        let mut off = 0usize;
        for &(_, len) in reqs {
            spans.push((off, len, len == 0));
            off += len;
        }
        Batch { data: vec![0; off], spans }
    }
    /// The bytes of request `i`, if it was read completely.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let (off, len, ok) = *self.spans.get(i)?;
        ok.then(|| &self.data[off..off + len])
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Read access to the memory of a running process.
///
/// Not `Sync` (the counters are plain cells); use one per thread.
#[derive(Debug)]
pub struct ProcessMemory {
    pid: u32,
    /// `/proc/PID/mem`, once `process_vm_readv` was refused.
    mem_file: RefCell<Option<File>>,
    limit: u64,
    requested: Cell<u64>,
    stats: Cell<ReadStats>,
}

impl ProcessMemory {
    /// Memory of process `pid`. Fails with [`MemoryError::NoSuchProcess`] if there is no such
    /// process; permission problems show on the first read.
    pub fn new(pid: u32) -> Result<ProcessMemory, MemoryError> {
        if pid == 0 || pid > i32::MAX as u32 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(MemoryError::NoSuchProcess { pid });
        }
        Ok(ProcessMemory {
            pid,
            mem_file: RefCell::new(None),
            limit: DEFAULT_BUDGET,
            requested: Cell::new(0),
            stats: Cell::new(ReadStats::default()),
        })
    }

    /// Caps the total number of bytes this reader will request (default [`DEFAULT_BUDGET`]).
    /// Requests past the cap fail with [`MemoryError::BudgetExceeded`].
    pub fn with_budget(mut self, bytes: u64) -> ProcessMemory {
        self.limit = bytes;
        self
    }

    /// The target's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Counters so far.
    pub fn stats(&self) -> ReadStats {
        self.stats.get()
    }

    /// Bytes that may still be requested.
    pub fn budget_left(&self) -> u64 {
        self.limit.saturating_sub(self.requested.get())
    }

    /// Whether the process is gone: no `/proc/PID`, or a zombie (its memory is gone).
    pub fn process_gone(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(_) => true,
            // "pid (comm) S ...": comm may contain spaces and parentheses; the state follows the last ')'.
            Ok(stat) => {
                stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|s| s == "Z" || s == "X")
            }
        }
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read_exact(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let batch = self.read_batch(&[(addr, buf.len())])?;
        match batch.get(0) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(MemoryError::Unmapped { pid: self.pid, addr, len: buf.len() }),
        }
    }

    /// Reads `len` bytes at `addr`.
    pub fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemoryError> {
        let mut v = vec![0; len];
        self.read_exact(addr, &mut v)?;
        Ok(v)
    }

    /// Reads a little-endian u64 at `addr`.
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read_exact(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads many `(address, length)` ranges, with as few syscalls as possible. A range that is
    /// not (completely) mapped reads as None in the result; only the process being gone, a
    /// permission problem or the budget fail the whole batch.
    ///
    /// Ranges less than [`MERGE_GAP`] bytes apart are read as one (g structs, sudogs and
    /// channels sit next to each other in the Go heap): the kernel's cost is mostly per range
    /// (pinning its pages), not per byte. A merged range that fails is read again piece by piece.
    pub fn read_batch(&self, reqs: &[(u64, usize)]) -> Result<Batch, MemoryError> {
        for &(_, len) in reqs {
            if len > MAX_REQUEST {
                return Err(MemoryError::TooLarge { pid: self.pid, len });
            }
        }
        let mut batch = Batch::sized_for(reqs);

        // Group ranges by address. A range that runs past the end of the address space (a
        // pointer of all ones in the target's memory) can never be read: it stays unread rather
        // than joining a group whose end would saturate short of it.
        let mut order: Vec<usize> =
            (0..reqs.len()).filter(|&i| reqs[i].1 > 0 && reqs[i].0.checked_add(reqs[i].1 as u64).is_some()).collect();
        order.sort_unstable_by_key(|&i| reqs[i].0);
        // (start, end, members in `order`)
        let mut groups: Vec<(u64, u64, std::ops::Range<usize>)> = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let (addr, len) = reqs[i];
            let end = addr.saturating_add(len as u64);
            match groups.last_mut() {
                Some((start, gend, members))
                    if addr <= gend.saturating_add(MERGE_GAP) && end.max(*gend) - *start <= MERGE_MAX as u64 =>
                {
                    *gend = end.max(*gend);
                    members.end = k + 1;
                }
                _ => groups.push((addr, end, k..k + 1)),
            }
        }
        let merged: u64 = groups.iter().map(|(s, e, _)| e - s).sum();
        if merged > self.budget_left() {
            return Err(MemoryError::BudgetExceeded { pid: self.pid, limit: self.limit });
        }
        self.requested.set(self.requested.get() + merged);
        if groups.len() == order.len() {
            self.fill(reqs, &mut batch)?;
            return Ok(batch);
        }
        let greqs: Vec<(u64, usize)> = groups.iter().map(|(s, e, _)| (*s, (e - s) as usize)).collect();
        let mut gbatch = Batch::sized_for(&greqs);
        self.fill(&greqs, &mut gbatch)?;
        let mut again = Vec::new();
        for (k, (start, _, members)) in groups.iter().enumerate() {
            match gbatch.get(k) {
                Some(bytes) => {
                    for &i in &order[members.clone()] {
                        let (addr, len) = reqs[i];
                        let from = (addr - start) as usize;
                        let (off, _, _) = batch.spans[i];
                        batch.data[off..off + len].copy_from_slice(&bytes[from..from + len]);
                        batch.spans[i].2 = true;
                    }
                }
                None if members.len() > 1 => again.extend(order[members.clone()].iter().copied()),
                None => {}
            }
        }
        if !again.is_empty() {
            // Piece by piece: some part of the merged range was unmapped.
            let sub: Vec<(u64, usize)> = again.iter().map(|&i| reqs[i]).collect();
            let extra: u64 = sub.iter().map(|r| r.1 as u64).sum();
            self.requested.set(self.requested.get() + extra);
            let mut sb = Batch::sized_for(&sub);
            self.fill(&sub, &mut sb)?;
            for (k, &i) in again.iter().enumerate() {
                if let Some(bytes) = sb.get(k) {
                    let (off, len, _) = batch.spans[i];
                    batch.data[off..off + len].copy_from_slice(bytes);
                    batch.spans[i].2 = true;
                }
            }
        }
        Ok(batch)
    }

    fn fill(&self, reqs: &[(u64, usize)], batch: &mut Batch) -> Result<(), MemoryError> {
        let mut i = 0;
        let mut idx: Vec<usize> = Vec::with_capacity(IOV_MAX.min(reqs.len()));
        let mut remote: Vec<(u64, usize)> = Vec::with_capacity(IOV_MAX.min(reqs.len()));
        while i < reqs.len() {
            if self.mem_file.borrow().is_some() {
                self.pread_one(reqs[i], &mut batch.data, &mut batch.spans[i])?;
                i += 1;
                continue;
            }
            // Gather up to IOV_MAX non-empty ranges starting at i.
            idx.clear();
            remote.clear();
            let mut j = i;
            while j < reqs.len() && remote.len() < IOV_MAX {
                let (addr, len) = reqs[j];
                if len == 0 {
                    batch.spans[j].2 = true;
                } else {
                    idx.push(j);
                    remote.push((addr, len));
                }
                j += 1;
            }
            if idx.is_empty() {
                i = j;
                continue;
            }
            let first = batch.spans[idx[0]].0;
            let last = idx[idx.len() - 1];
            let end = batch.spans[last].0 + batch.spans[last].1;
            let read = sys::read_process(self.pid, &mut batch.data[first..end], &remote);
            self.bump(|s| s.syscalls += 1);
            let n = match read {
                Ok(n) => n,
                Err(err) => {
                    match err.raw_os_error().unwrap_or(0) {
                        libc::EINTR => {}
                        // Nothing copied: the first range is unreadable.
                        libc::EFAULT => {
                            self.bump(|s| s.failed_ranges += 1);
                            i = idx[0] + 1;
                        }
                        libc::ESRCH => return Err(MemoryError::Exited { pid: self.pid }),
                        libc::EPERM | libc::ENOSYS => self.fall_back(err)?,
                        _ => return Err(MemoryError::Io { pid: self.pid, op: "process_vm_readv", source: err }),
                    }
                    continue;
                }
            };
            let mut got = n;
            self.bump(|s| s.bytes += got as u64);
            let mut k = 0;
            while k < idx.len() && got >= reqs[idx[k]].1 {
                got -= reqs[idx[k]].1;
                batch.spans[idx[k]].2 = true;
                k += 1;
            }
            if k == idx.len() {
                i = j;
            } else {
                // The kernel stops at the first range it cannot read completely.
                self.bump(|s| s.failed_ranges += 1);
                i = idx[k] + 1;
            }
        }
        Ok(())
    }

    fn fall_back(&self, why: io::Error) -> Result<(), MemoryError> {
        let path = format!("/proc/{}/mem", self.pid);
        match File::open(&path) {
            Ok(f) => {
                *self.mem_file.borrow_mut() = Some(f);
                self.bump(|s| s.proc_mem_fallback = true);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(MemoryError::Exited { pid: self.pid }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                // Report the original refusal; the fallback was refused for the same reason.
                let _ = e;
                Err(MemoryError::Permission { pid: self.pid, source: why })
            }
            Err(e) => Err(MemoryError::Io { pid: self.pid, op: "opening /proc/PID/mem", source: e }),
        }
    }

    fn pread_one(&self, (addr, len): (u64, usize), data: &mut [u8], span: &mut (usize, usize, bool)) -> Result<(), MemoryError> {
        if len == 0 {
            span.2 = true;
            return Ok(());
        }
        let file = self.mem_file.borrow();
        let file = file.as_ref().expect("pread_one only runs after the fallback opened the file");
        let buf = &mut data[span.0..span.0 + len];
        let mut done = 0;
        while done < len {
            let r = sys::read_at(file, &mut buf[done..], addr.wrapping_add(done as u64));
            self.bump(|s| s.syscalls += 1);
            match r {
                Ok(0) => {
                    if self.process_gone() {
                        return Err(MemoryError::Exited { pid: self.pid });
                    }
                    break;
                }
                Ok(n) => {
                    done += n;
                    self.bump(|s| s.bytes += n as u64);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EIO | libc::EFAULT | libc::EINVAL) => break,
                    Some(libc::ESRCH) => return Err(MemoryError::Exited { pid: self.pid }),
                    Some(libc::EPERM | libc::EACCES) => return Err(MemoryError::Permission { pid: self.pid, source: e }),
                    _ => return Err(MemoryError::Io { pid: self.pid, op: "reading /proc/PID/mem", source: e }),
                },
            }
        }
        span.2 = done == len;
        if done < len {
            self.bump(|s| s.failed_ranges += 1);
        }
        Ok(())
    }

    fn bump(&self, f: impl FnOnce(&mut ReadStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Test hook: route every read through `/proc/PID/mem` as if `process_vm_readv` were refused.
    #[doc(hidden)]
    pub fn force_proc_mem(&self) -> Result<(), MemoryError> {
        self.fall_back(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{self, TestPages};

    fn own() -> ProcessMemory {
        ProcessMemory::new(std::process::id()).unwrap()
    }

    #[test]
    fn reads_own_memory_in_batches() {
        // Ranges 512 bytes apart (more than MERGE_GAP): one iovec each, 1024 per syscall.
        let data: Vec<u64> = (0..5000u64 * 64).map(|i| i * 3).collect();
        let mem = own();
        let reqs: Vec<(u64, usize)> = (0..5000).map(|i| (&data[i * 64] as *const u64 as u64, 8)).collect();
        let b = mem.read_batch(&reqs).unwrap();
        for i in 0..5000 {
            assert_eq!(u64::from_le_bytes(b.get(i).unwrap().try_into().unwrap()), data[i * 64]);
        }
        assert_eq!(mem.stats().syscalls, 5);
        // Adjacent ranges, in any order and overlapping, are merged into one.
        let mem = own();
        let mut reqs: Vec<(u64, usize)> = (0..3000).map(|i| (&data[i] as *const u64 as u64, 16)).collect();
        reqs.reverse();
        let b = mem.read_batch(&reqs).unwrap();
        for (k, i) in (0..3000).rev().enumerate() {
            assert_eq!(b.get(k).unwrap()[..8], data[i].to_le_bytes());
        }
        assert_eq!(mem.stats().syscalls, 1);
    }

    #[test]
    fn merged_range_with_a_hole_is_read_piece_by_piece() {
        // Two pages with the second unmapped: a merged read fails, the parts are retried.
        let mut pages = TestPages::map(2);
        pages.write_u64(4080, 42);
        pages.unmap_page(1);
        let a = pages.addr();
        let mem = own();
        let b = mem.read_batch(&[(a + 4080, 8), (a + 4100, 8)]).unwrap();
        assert_eq!(b.get(0), Some(&42u64.to_le_bytes()[..]));
        assert_eq!(b.get(1), None);
    }

    /// Fake `process_vm_readv` answers for ranges at 0x1000, 0x2000, ... (1 KiB apart, never merged).
    fn ranges(n: u64) -> Vec<(u64, usize)> {
        (1..=n).map(|i| (i << 12, 8)).collect()
    }

    #[test]
    fn a_short_copy_completes_the_ranges_before_it_and_retries_after() {
        let calls = std::rc::Rc::new(Cell::new(0));
        let seen = calls.clone();
        let b = fake::with_readv(
            move |_, local, remote| {
                seen.set(seen.get() + 1);
                for (chunk, &(addr, _)) in local.chunks_mut(8).zip(remote) {
                    chunk.copy_from_slice(&addr.to_le_bytes());
                }
                // The first call stops inside the second range (as the kernel does at a hole).
                Ok(if seen.get() == 1 { 12 } else { local.len() })
            },
            || own().read_batch(&ranges(3)).unwrap(),
        );
        assert_eq!(b.get(0), Some(&0x1000u64.to_le_bytes()[..]));
        assert_eq!(b.get(1), None, "the range the copy stopped in is unreadable");
        assert_eq!(b.get(2), Some(&0x3000u64.to_le_bytes()[..]), "read again by a second call");
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn a_process_gone_mid_read_is_exited_and_a_refusal_falls_back_to_proc_mem() {
        let exited = fake::with_readv(|_, _, _| Err(io::Error::from_raw_os_error(libc::ESRCH)), || own().read_batch(&ranges(2)));
        assert!(matches!(exited, Err(MemoryError::Exited { .. })), "{exited:?}");
        let x = 0x5555u64;
        let mem = own();
        let via_proc_mem =
            fake::with_readv(|_, _, _| Err(io::Error::from_raw_os_error(libc::EPERM)), || mem.read_u64(&x as *const u64 as u64));
        assert_eq!(via_proc_mem.unwrap(), x);
        assert!(mem.stats().proc_mem_fallback);
        let refused =
            fake::with_pread(|_, _| Err(io::Error::from_raw_os_error(libc::EACCES)), || mem.read_u64(&x as *const u64 as u64));
        assert!(matches!(refused, Err(MemoryError::Permission { .. })), "{refused:?}");
    }

    #[test]
    fn unmapped_ranges_fail_alone() {
        let x = 0x1122_3344_5566_7788u64;
        let mem = own();
        let good = &x as *const u64 as u64;
        let b = mem.read_batch(&[(good, 8), (8, 8), (good, 8), (0xffff_ffff_0000, 16), (good, 8)]).unwrap();
        assert_eq!(b.get(0), Some(&x.to_le_bytes()[..]));
        assert_eq!(b.get(1), None);
        assert_eq!(b.get(2), Some(&x.to_le_bytes()[..]));
        assert_eq!(b.get(3), None);
        assert_eq!(b.get(4), Some(&x.to_le_bytes()[..]));
        assert_eq!(mem.stats().failed_ranges, 2);
        assert!(matches!(mem.read_u64(16), Err(MemoryError::Unmapped { .. })));
    }

    #[test]
    fn proc_mem_fallback_reads_the_same() {
        let data: Vec<u8> = (0..=255u8).collect();
        let mem = own();
        mem.force_proc_mem().unwrap();
        let b = mem.read_batch(&[(data.as_ptr() as u64, 256), (24, 8), (data.as_ptr() as u64 + 10, 3)]).unwrap();
        assert_eq!(b.get(0), Some(&data[..]));
        assert_eq!(b.get(1), None);
        assert_eq!(b.get(2), Some(&data[10..13]));
        assert!(mem.stats().proc_mem_fallback);
    }

    #[test]
    fn budget_and_size_limits() {
        let mem = own().with_budget(16);
        let x = 7u64;
        let a = &x as *const u64 as u64;
        assert_eq!(mem.read_u64(a).unwrap(), 7);
        assert_eq!(mem.read_u64(a).unwrap(), 7);
        assert!(matches!(mem.read_u64(a), Err(MemoryError::BudgetExceeded { .. })));
        assert!(matches!(own().read_vec(a, MAX_REQUEST + 1), Err(MemoryError::TooLarge { .. })));
    }

    /// Ranges that run past the end of the address space (g pointers of all ones in a hostile
    /// `allgs`) are unreadable, alone or merged, and never index past what was read.
    #[test]
    fn ranges_past_the_end_of_the_address_space_are_unreadable() {
        let x = 0x1122_3344_5566_7788u64;
        let good = &x as *const u64 as u64;
        let mem = own();
        for reqs in [
            &[(u64::MAX, 8), (u64::MAX, 8), (good, 8)][..],
            &[(good, 8), (u64::MAX - 3, 8), (u64::MAX - 3, 16), (u64::MAX, 8)][..],
            &[(u64::MAX - 7, 8), (u64::MAX - 7, 8), (good, 8)][..],
        ] {
            let b = mem.read_batch(reqs).unwrap();
            for (i, &(addr, _)) in reqs.iter().enumerate() {
                let bytes = x.to_le_bytes();
                let expected = (addr == good).then_some(&bytes[..]);
                assert_eq!(b.get(i), expected, "{reqs:x?}");
            }
        }
    }

    #[test]
    fn missing_process() {
        let err = ProcessMemory::new(i32::MAX as u32).unwrap_err();
        assert_eq!(err.to_string(), format!("no process with PID {}", i32::MAX));
        assert!(ProcessMemory::new(0).is_err());
    }
}
