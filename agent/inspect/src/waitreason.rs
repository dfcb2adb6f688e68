//! `runtime.waitReasonStrings`: the `[N]string` array mapping `g.waitreason` codes to names.

use serde::Serialize;

use crate::elf::{Elf, le_u64};

/// Longest wait reason string accepted (the longest real one is ~30 bytes).
const MAX_REASON_LEN: u64 = 64;
/// waitReason is a uint8.
const MAX_REASONS: usize = 256;

/// Code -> name table of goroutine wait reasons.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WaitReasonTable {
    names: Vec<String>,
    source: &'static str,
}

impl WaitReasonTable {
    pub(crate) fn new(names: Vec<String>, source: &'static str) -> Self {
        WaitReasonTable { names, source }
    }

    /// A table of these names in code order (source "given"), e.g. for tests.
    pub fn from_names(names: Vec<String>) -> Self {
        WaitReasonTable { names, source: "given" }
    }

    /// Name of a code ("chan receive"); None past the end ("unknown wait reason" in Go).
    pub fn name(&self, code: u8) -> Option<&str> {
        self.names.get(usize::from(code)).map(String::as_str)
    }

    /// Code of a name, e.g. `code_of("chan receive")` is 14 on 1.19–1.25 and 19 on 1.26+.
    pub fn code_of(&self, name: &str) -> Option<u8> {
        self.names.iter().position(|n| n == name).and_then(|i| u8::try_from(i).ok())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// "binary" (read from the binary), "table" (checked-in per-version table) or "given"
    /// ([`WaitReasonTable::from_names`]).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// All names in code order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Reads a Go string header {ptr, len} at `entry` and returns the text if it is plausible.
fn read_string(elf: &Elf<'_>, entry_vaddr: u64) -> Option<Option<String>> {
    let ptr = elf.read_ptr(entry_vaddr)?;
    let len = le_u64(elf.read(entry_vaddr.checked_add(8)?, 8)?, 0)?;
    if len == 0 {
        return Some(if ptr == 0 { Some(String::new()) } else { None });
    }
    if len > MAX_REASON_LEN {
        return None;
    }
    let bytes = elf.read(ptr, len)?;
    if !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return None;
    }
    Some(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// With a symbol: `count` entries at `vaddr`.
pub(crate) fn read_at(elf: &Elf<'_>, vaddr: u64, count: usize) -> Option<Vec<String>> {
    if count == 0 || count > MAX_REASONS {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = vaddr.checked_add(16 * i as u64)?;
        if i == 0 {
            // Entry 0 is the empty string: ptr 0 (or anything) with len 0.
            let len = le_u64(elf.read(e.checked_add(8)?, 8)?, 0)?;
            if len != 0 {
                return None;
            }
            out.push(String::new());
            continue;
        }
        out.push(read_string(elf, e)??);
    }
    Some(out)
}

/// Stripped amd64 binaries: `runtime.waitReason.String` is
/// `if w >= len(waitReasonStrings) { return "unknown wait reason" }; return waitReasonStrings[w]`,
/// so its first `CMP reg8/32, imm` gives the array length and one of its RIP-relative `LEA`s the
/// array address (the other points at "unknown wait reason"). Decoded with iced-x86; the result
/// is accepted only if the array content checks out.
pub(crate) fn from_string_method(elf: &Elf<'_>, entry: u64, code: &[u8]) -> Option<Vec<String>> {
    use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut count: Option<usize> = None;
    let mut targets = Vec::new();
    for _ in 0..64 {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            break;
        }
        if count.is_none()
            && instr.mnemonic() == Mnemonic::Cmp
            && instr.op_count() == 2
            && instr.op0_kind() == OpKind::Register
            && matches!(instr.op1_kind(), OpKind::Immediate8 | OpKind::Immediate8to32 | OpKind::Immediate32)
        {
            count = usize::try_from(instr.immediate(1)).ok().filter(|n| (3..=MAX_REASONS).contains(n));
        }
        if instr.mnemonic() == Mnemonic::Lea && instr.is_ip_rel_memory_operand() {
            targets.push(instr.ip_rel_memory_address());
        }
    }
    let count = count?;
    targets.into_iter().find_map(|t| {
        let names = read_at(elf, t, count)?;
        (names.get(1).map(String::as_str) == Some("GC assist marking")).then_some(names)
    })
}

/// Stripped binaries: scan writable data for 16 zero bytes followed by
/// {ptr -> "GC assist marking", 17}, {ptr -> "IO wait", 7} (entries 0-2 are the same in every
/// version), then read entries until one is not a plausible non-empty string.
pub(crate) fn scan(elf: &Elf<'_>) -> Option<(u64, Vec<String>)> {
    let mut candidates = 0;
    for (base, bytes) in elf.writable_regions() {
        let skip = ((16 - (base % 16)) % 16) as usize;
        let mut off = skip;
        while off + 48 <= bytes.len() {
            if le_u64(bytes, off + 24) == Some(17)
                && le_u64(bytes, off + 40) == Some(7)
                && bytes[off..off + 16].iter().all(|b| *b == 0)
            {
                candidates += 1;
                if candidates > crate::MAX_SCAN_CANDIDATES {
                    return None;
                }
                let vaddr = base.wrapping_add(off as u64);
                if read_string(elf, vaddr.wrapping_add(16)) == Some(Some("GC assist marking".into()))
                    && read_string(elf, vaddr.wrapping_add(32)) == Some(Some("IO wait".into()))
                {
                    let mut names = vec![String::new()];
                    for i in 1..MAX_REASONS {
                        match read_string(elf, vaddr.wrapping_add(16 * i as u64)) {
                            Some(Some(s)) if !s.is_empty() => names.push(s),
                            _ => break,
                        }
                    }
                    return Some((vaddr, names));
                }
            }
            off += 16;
        }
    }
    None
}
