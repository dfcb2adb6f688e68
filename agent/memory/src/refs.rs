//! Which values a parked goroutine's stack holds: the evidence for "who could still operate on
//! this channel" that deadlock detection needs. A parked goroutine's stack does not change until
//! it runs again (a GC stack move keeps the values), so one read per wait is enough.
use goscope_inspect::GoBinary;

use crate::{MemoryError, ProcessMemory};

/// Largest stack span read: deeper stacks are cut at their innermost 256 KiB.
const MAX_STACK_READ: u64 = 256 << 10;

/// The 8-byte words between the saved stack pointer and the top of the stack of the parked
/// goroutine at `g_addr`. Empty when the g's saved state is implausible (it is running, or the
/// struct was reused).
pub fn stack_words(mem: &ProcessMemory, binary: &GoBinary, g_addr: u64) -> Result<Vec<u64>, MemoryError> {
    let sp_off = u64::from(binary.layout().g_sched_sp);
    // g.stack = {lo, hi} at offset 0.
    let head = mem.read_vec(g_addr, 16)?;
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let (lo, hi) = (word(&head, 0), word(&head, 1));
    let sp = mem.read_u64(g_addr + sp_off)?;
    if lo == 0 || hi <= lo || sp < lo || sp >= hi || !sp.is_multiple_of(8) {
        return Ok(Vec::new());
    }
    let len = (hi - sp).min(MAX_STACK_READ);
    let bytes = mem.read_vec(sp, len as usize)?;
    Ok(bytes.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c)).collect())
}

/// Every 8-byte word of the stack `[lo, hi)` of the goroutine at `g_addr`, whatever its saved
/// state (for one that is running, whose saved stack pointer is stale). An error when the bounds
/// are implausible or the stack is larger than a read allows (a caller that must see every word
/// then knows it did not).
pub fn whole_stack_words(mem: &ProcessMemory, g_addr: u64) -> Result<Vec<u64>, MemoryError> {
    // g.stack = {lo, hi} at offset 0.
    let head = mem.read_vec(g_addr, 16)?;
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let (lo, hi) = (word(&head, 0), word(&head, 1));
    if lo == 0 || hi <= lo || !lo.is_multiple_of(8) || hi - lo > MAX_STACK_READ {
        return Err(MemoryError::Unmapped { pid: mem.pid(), addr: lo, len: hi.saturating_sub(lo) as usize });
    }
    let bytes = mem.read_vec(lo, (hi - lo) as usize)?;
    Ok(bytes.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c)).collect())
}

/// Largest function body decoded for its global references.
const MAX_FUNCTION_BYTES: u64 = 64 << 10;

/// Runtime addresses of the package-level variables that the function at runtime addresses
/// `[entry, end)` loads, stores or takes the address of (RIP-relative operands): the channels,
/// locks and pointers a goroutine running it can reach without holding them on its stack.
pub fn referenced_globals(mem: &ProcessMemory, entry: u64, end: u64) -> Result<Vec<u64>, MemoryError> {
    let len = end.saturating_sub(entry).min(MAX_FUNCTION_BYTES);
    let code = mem.read_vec(entry, len as usize)?;
    let mut decoder = iced_x86::Decoder::with_ip(64, &code, entry, iced_x86::DecoderOptions::NONE);
    let mut globals: Vec<u64> =
        decoder.iter().filter(|insn| insn.is_ip_rel_memory_operand()).map(|insn| insn.ip_rel_memory_address()).collect();
    globals.sort_unstable();
    globals.dedup();
    Ok(globals)
}
