//! Which semaphore each goroutine parked in a sync wait sleeps on, from the runtime's
//! `semtable`: what Go 1.19–1.25 keep nowhere else.
//!
//! `sync.Mutex`, `RWMutex` and `WaitGroup` park through `runtime.semacquire1`, which queues a
//! sudog with `g` = the goroutine and `elem` = the semaphore's address (a field inside the
//! primitive) in `semtable[(addr >> 3) % 251].root`: a treap of sudogs, one node per address
//! (children in `prev`/`next`), the other waiters on that address chained from it through
//! `waitlink` (`sema.go`, `semaRoot.queue`). Before Go 1.26 `g.waiting` does not point at that
//! sudog, so a wait that began before goscope attached has no known primitive without this walk.
//!
//! The table changes while it is read, so it is read twice and only the (g, address) pairs both
//! reads agree on are returned; callers use them only for goroutines whose own g struct says they
//! are in such a wait. `runtime.semtable` is `[251]struct{root semaRoot; pad}` with each entry
//! padded to a 64-byte cache line and `semaRoot` = `{lock mutex; treap *sudog; nwait uint32}`
//! (`runtime.mutex` is one word without static lock ranking) in every release from 1.19 to 1.27.
use std::collections::{HashMap, HashSet};

use goscope_inspect::GoBinary;

use crate::process::{MemoryError, ProcessMemory};

/// Entries of `runtime.semtable` (`semTabSize`).
const SEMTABLE_ENTRIES: u64 = 251;
/// Bytes per entry: a `semaRoot` padded to `cpu.CacheLinePadSize` (64 on amd64 and arm64).
const SEMTABLE_STRIDE: u64 = 64;
/// `semaRoot.treap` follows the one-word `semaRoot.lock`.
const TREAP_OFFSET: u64 = 8;
/// Most sudogs followed per read (a bound against a garbage cycle in a torn read).
const MAX_SUDOGS: usize = 1 << 20;

/// The wait reasons (as the runtime names them) of goroutines parked in `semacquire1`. Go 1.19
/// calls every one of them "semacquire"; later releases name the primitive.
pub fn is_semaphore_wait(wait_reason: &str) -> bool {
    let base = wait_reason.strip_suffix(" (synctest)").or_else(|| wait_reason.strip_suffix(" (durable)")).unwrap_or(wait_reason);
    matches!(base, "semacquire" | "sync.Mutex.Lock" | "sync.RWMutex.RLock" | "sync.RWMutex.Lock" | "sync.WaitGroup.Wait")
}

/// Field offsets of `runtime.sudog` the walk reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SudogFields {
    g: usize,
    next: usize,
    prev: usize,
    elem: usize,
    waitlink: usize,
    len: usize,
}

impl SudogFields {
    pub(crate) fn of(binary: &GoBinary) -> SudogFields {
        let l = binary.layout();
        let u = |x: u32| x as usize;
        // `prev` follows `next` in every release (`g, next, prev, elem, ...`).
        let (g, next, elem, waitlink) = (u(l.sudog_g), u(l.sudog_next), u(l.sudog_elem), u(l.sudog_waitlink));
        let len = [g, next + 8, elem, waitlink].into_iter().max().unwrap_or(0) + 8;
        SudogFields { g, next, prev: next + 8, elem, waitlink, len }
    }
}

/// g address → (the semaphore address it waits on, its sudog), for every sudog queued in
/// `runtime.semtable` that two reads agree on. Empty when `runtime.semtable` cannot be found.
pub fn semaphore_waiters(
    mem: &ProcessMemory,
    binary: &GoBinary,
    load_bias: u64,
) -> Result<HashMap<u64, (u64, u64)>, MemoryError> {
    let Some(table) = locate_semtable(mem, binary, load_bias) else {
        return Ok(HashMap::new());
    };
    let fields = SudogFields::of(binary);
    let first = read_table(mem, table, &fields)?;
    if first.is_empty() {
        return Ok(first);
    }
    let second = read_table(mem, table, &fields)?;
    Ok(first.into_iter().filter(|(g, addr)| second.get(g) == Some(addr)).collect())
}

/// Runtime address of `runtime.semtable`: its symbol, or in a stripped binary the one address
/// that both `runtime.semacquire1` and `runtime.semrelease1` take with a RIP-relative LEA (their
/// inlined `semroot`) and whose memory looks like the table: 251 cache lines, each a word-aligned
/// treap pointer after the lock and nothing but zeros after `nwait`.
fn locate_semtable(mem: &ProcessMemory, binary: &GoBinary, load_bias: u64) -> Option<u64> {
    if let Some(a) = binary.data_symbol("runtime.semtable") {
        return Some(a.wrapping_add(load_bias));
    }
    if binary.arch() != goscope_inspect::Arch::Amd64 {
        return None;
    }
    let lea_targets = |name: &str| -> Option<Vec<u64>> {
        let f = binary.function(name)?;
        let ip = f.entry.wrapping_add(load_bias);
        let code = mem.read_vec(ip, f.end.saturating_sub(f.entry).clamp(1, 8192) as usize).ok()?;
        let decoder = iced_x86::Decoder::with_ip(64, &code, ip, iced_x86::DecoderOptions::NONE);
        let mut targets: Vec<u64> = decoder
            .into_iter()
            .take_while(|i| !i.is_invalid())
            .filter(|i| i.mnemonic() == iced_x86::Mnemonic::Lea && i.is_ip_rel_memory_operand())
            .map(|i| i.ip_rel_memory_address())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        Some(targets)
    };
    let acquire = lea_targets("runtime.semacquire1")?;
    let release = lea_targets("runtime.semrelease1")?;
    acquire.into_iter().filter(|a| release.binary_search(a).is_ok()).find(|&a| looks_like_semtable(mem, a))
}

/// The memory at `addr` has the shape of `runtime.semtable` (see [`locate_semtable`]).
fn looks_like_semtable(mem: &ProcessMemory, addr: u64) -> bool {
    let Ok(bytes) = mem.read_vec(addr, (SEMTABLE_ENTRIES * SEMTABLE_STRIDE) as usize) else { return false };
    bytes.as_chunks::<{ SEMTABLE_STRIDE as usize }>().0.iter().all(|entry| {
        let treap = u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes"));
        (treap == 0 || plausible(treap)) && entry[20..].iter().all(|&b| b == 0)
    })
}

/// One read of every treap: g → (semaphore address, sudog) (a g seen twice is left out: the read
/// was torn).
pub(crate) fn read_table(mem: &ProcessMemory, table: u64, f: &SudogFields) -> Result<HashMap<u64, (u64, u64)>, MemoryError> {
    let bytes = mem.read_vec(table, (SEMTABLE_ENTRIES * SEMTABLE_STRIDE) as usize)?;
    let mut todo: Vec<u64> = (0..SEMTABLE_ENTRIES)
        .map(|i| (i * SEMTABLE_STRIDE + TREAP_OFFSET) as usize)
        .map(|off| u64::from_le_bytes(bytes[off..off + 8].try_into().expect("8 bytes")))
        .filter(|&p| plausible(p))
        .collect();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut waits: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut torn: HashSet<u64> = HashSet::new();
    while !todo.is_empty() && seen.len() < MAX_SUDOGS {
        todo.retain(|&p| seen.insert(p));
        let reqs: Vec<(u64, usize)> = todo.iter().map(|&p| (p, f.len)).collect();
        let batch = mem.read_batch(&reqs)?;
        let mut next = Vec::new();
        for (k, &sudog) in todo.iter().enumerate() {
            let Some(b) = batch.get(k) else { continue };
            let word = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"));
            let (g, elem) = (word(f.g), word(f.elem));
            // A semaphore is a uint32: 4-aligned. A dequeued sudog has elem cleared.
            if plausible(g) && elem >= 4096 && elem.is_multiple_of(4) && waits.insert(g, (elem, sudog)).is_some() {
                torn.insert(g);
            }
            next.extend([word(f.prev), word(f.next), word(f.waitlink)].into_iter().filter(|&p| plausible(p)));
        }
        todo = next;
    }
    waits.retain(|g, _| !torn.contains(g));
    Ok(waits)
}

/// Offset of `head` in `runtime.notifyList` (`wait, notify uint32; lock uintptr; head, tail
/// *sudog`, 1.19–1.27).
const NOTIFY_LIST_HEAD: u64 = 16;
/// Offset of `tail`, the last sudog of the list.
const NOTIFY_LIST_TAIL: u64 = 24;
/// Offset of `notify` (the notifyList) in `sync.Cond` (`noCopy; L Locker; notify; checker`).
const COND_NOTIFY: u64 = 16;
/// Bytes of stack read above a Cond waiter's saved SP: the frames of gopark, goparkunlock,
/// notifyListWait and Cond.Wait, which keep the Cond or its notifyList in a spill slot.
const COND_STACK_WINDOW: u64 = 1024;
/// Most sudogs followed per notify list.
const MAX_LIST_SUDOGS: usize = 4096;

/// The wait reason of a goroutine parked in `sync.Cond.Wait` (`runtime.notifyListWait`).
pub fn is_notify_list_wait(wait_reason: &str) -> bool {
    let base = wait_reason.strip_suffix(" (synctest)").or_else(|| wait_reason.strip_suffix(" (durable)")).unwrap_or(wait_reason);
    base == "sync.Cond.Wait"
}

/// g address → (the address of the `runtime.notifyList` it waits in, its sudog there), for
/// goroutines parked in `sync.Cond.Wait` (`g_addrs`). Before Go 1.26 only the list itself links the waiter's sudog,
/// so the list is found from the other side: words near the top of the waiter's stack (where
/// `Cond.Wait` keeps `c`, and `notifyListWait` its `l`) taken as a `*notifyList` or a `*Cond`
/// are kept only when that list holds a sudog whose `g` is the waiter. A list is the notify list
/// of at most one Cond, so such a match cannot name a wrong one.
pub fn notify_list_waiters(
    mem: &ProcessMemory,
    binary: &GoBinary,
    g_addrs: &[u64],
) -> Result<HashMap<u64, (u64, u64)>, MemoryError> {
    let l = binary.layout();
    let (sp_off, sudog_g, sudog_next) = (u64::from(l.g_sched_sp), l.sudog_g as usize, l.sudog_next as usize);
    // Each waiter's stack bounds (g.stack = {lo, hi} at 0) and saved SP.
    let reqs: Vec<(u64, usize)> = g_addrs.iter().flat_map(|&g| [(g, 16), (g + sp_off, 8)]).collect();
    let batch = mem.read_batch(&reqs)?;
    let word = |b: &[u8], off: usize| u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"));
    let mut windows = Vec::new();
    for (k, &g) in g_addrs.iter().enumerate() {
        let (Some(bounds), Some(sp)) = (batch.get(2 * k), batch.get(2 * k + 1)) else { continue };
        let (lo, hi, sp) = (word(bounds, 0), word(bounds, 8), word(sp, 0));
        if lo < sp && sp < hi && sp.is_multiple_of(8) {
            windows.push((g, sp, hi.min(sp + COND_STACK_WINDOW)));
        }
    }
    let reqs: Vec<(u64, usize)> = windows.iter().map(|&(_, from, to)| (from, (to - from) as usize)).collect();
    let stacks = mem.read_batch(&reqs)?;
    // (waiter, candidate list address)
    let mut candidates: Vec<(u64, u64)> = Vec::new();
    for (k, &(g, _, _)) in windows.iter().enumerate() {
        let Some(bytes) = stacks.get(k) else { continue };
        let mut words: Vec<u64> =
            bytes.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c)).filter(|&w| plausible(w)).collect();
        words.sort_unstable();
        words.dedup();
        candidates.extend(words.into_iter().flat_map(|w| [(g, w), (g, w + COND_NOTIFY)]));
    }
    // Walk every candidate list one sudog a round; a list proves itself by holding its waiter.
    let reqs: Vec<(u64, usize)> = candidates.iter().map(|&(_, list)| (list + NOTIFY_LIST_HEAD, 8)).collect();
    let heads = mem.read_batch(&reqs)?;
    // (waiter, list, next sudog)
    let mut cursors: Vec<(u64, u64, u64)> = candidates
        .iter()
        .enumerate()
        .filter_map(|(k, &(g, list))| Some((g, list, word(heads.get(k)?, 0))))
        .filter(|&(_, _, s)| plausible(s))
        .collect();
    let len = sudog_g.max(sudog_next) + 8;
    // (waiter, list, its sudog, the sudog reached so far)
    let mut matches: Vec<(u64, u64, u64, u64)> = Vec::new();
    for _ in 0..MAX_LIST_SUDOGS {
        if cursors.is_empty() {
            break;
        }
        let reqs: Vec<(u64, usize)> = cursors.iter().map(|&(_, _, s)| (s, len)).collect();
        let batch = mem.read_batch(&reqs)?;
        let mut next = Vec::new();
        for (k, &(g, list, sudog)) in cursors.iter().enumerate() {
            let Some(b) = batch.get(k) else { continue };
            if word(b, sudog_g) == g {
                matches.push((g, list, sudog, sudog));
            } else if plausible(word(b, sudog_next)) {
                next.push((g, list, word(b, sudog_next)));
            }
        }
        cursors = next;
    }
    // A word that is not the list but 8 bytes before it takes the list's `tail` for its `head`,
    // and that chain holds the last waiter too: a list is only one whose walk from the waiter's
    // sudog ends at its `tail`.
    let reqs: Vec<(u64, usize)> = matches.iter().map(|&(_, list, _, _)| (list + NOTIFY_LIST_TAIL, 8)).collect();
    let tails: Vec<Option<u64>> = {
        let batch = mem.read_batch(&reqs)?;
        (0..matches.len()).map(|k| batch.get(k).map(|b| word(b, 0))).collect()
    };
    let mut walking: Vec<(usize, u64)> = matches.iter().enumerate().map(|(k, m)| (k, m.3)).collect();
    let mut verified = vec![false; matches.len()];
    for _ in 0..MAX_LIST_SUDOGS {
        if walking.is_empty() {
            break;
        }
        let reqs: Vec<(u64, usize)> = walking.iter().map(|&(_, s)| (s, len)).collect();
        let batch = mem.read_batch(&reqs)?;
        let mut next = Vec::new();
        for (i, &(k, at)) in walking.iter().enumerate() {
            let Some(b) = batch.get(i) else { continue };
            match word(b, sudog_next) {
                0 => verified[k] = tails[k] == Some(at),
                n if plausible(n) => next.push((k, n)),
                _ => {}
            }
        }
        walking = next;
    }
    // One list per waiter; two that both hold it decide nothing.
    let mut found: HashMap<u64, Option<(u64, u64)>> = HashMap::new();
    for (&(g, list, sudog, _), _) in matches.iter().zip(&verified).filter(|(_, v)| **v) {
        found
            .entry(g)
            .and_modify(|f| {
                if f.is_some_and(|(l, _)| l != list) {
                    *f = None
                }
            })
            .or_insert(Some((list, sudog)));
    }
    Ok(found.into_iter().filter_map(|(g, f)| Some((g, f?))).collect())
}

/// A pointer to a runtime object could be this (non-null, word-aligned, above the zero page).
fn plausible(p: u64) -> bool {
    p >= 4096 && p.is_multiple_of(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_name_of_a_semaphore_wait_and_nothing_else() {
        for r in ["semacquire", "sync.Mutex.Lock", "sync.RWMutex.RLock", "sync.RWMutex.Lock", "sync.WaitGroup.Wait"] {
            assert!(is_semaphore_wait(r), "{r}");
        }
        assert!(is_semaphore_wait("sync.WaitGroup.Wait (durable)"));
        assert!(is_semaphore_wait("sync.Mutex.Lock (synctest)"));
        for r in ["sync.Cond.Wait", "chan receive", "select", "sleep", ""] {
            assert!(!is_semaphore_wait(r), "{r}");
        }
    }
}
