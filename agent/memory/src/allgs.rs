//! Where the runtime keeps its list of goroutines.
//!
//! `runtime.allgs` is a `[]*g` slice header (ptr, len, cap) of every g ever created, dead ones
//! included (they are reused); `runtime.allglen` is `len(allgs)`, stored atomically after the
//! slice is updated. The runtime's own lock-free reader (`forEachGRace`) reads `allglen` before
//! the array pointer so that the length never exceeds the array it indexes; [`crate::snapshot`]
//! does the same.
//!
//! With an ELF symbol table both addresses are data symbols. Stripped binaries have none, so the
//! addresses are recovered from the machine code of `runtime.allgadd` (see
//! [`find_allgs_in_code`]).
use goscope_inspect::{Arch, GoBinary};
use iced_x86::{Code, Decoder, DecoderOptions, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register};
use serde::Serialize;

use crate::process::{MemoryError, ProcessMemory};

/// Function whose code is decoded for stripped binaries.
pub const ALLGADD: &str = "runtime.allgadd";
/// Most bytes of `runtime.allgadd` decoded (it is ~350 bytes in Go 1.19-1.27).
const MAX_CODE: u64 = 4096;

/// How the addresses were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllgsSource {
    /// ELF `.symtab` data symbols.
    Symtab,
    /// Decoded from the machine code of `runtime.allgadd`.
    Code,
}

/// Runtime (load-biased) addresses of the goroutine list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AllgsLocation {
    /// `runtime.allgs`, the slice header.
    pub allgs: u64,
    /// `runtime.allglen`; None if it could not be identified (then `len(allgs)` is used).
    pub allglen: Option<u64>,
    /// How the addresses were found.
    pub source: AllgsSource,
}

/// Why the goroutine list could not be located.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// Reading the code or the variables failed.
    #[error("{0}")]
    Memory(#[from] MemoryError),
    /// No symbol, and the code of `runtime.allgadd` did not say where (the reason).
    #[error("cannot locate runtime.allgs: the binary has no symbol table and {0}")]
    NotFound(String),
}

/// Finds `runtime.allgs` / `runtime.allglen` of a process running `binary` at `load_bias`.
/// Symbols first; otherwise the code of `runtime.allgadd`, read from the process itself (the
/// bytes that actually run, whatever file they came from).
pub fn locate_allgs(mem: &ProcessMemory, binary: &GoBinary, load_bias: u64) -> Result<AllgsLocation, LocateError> {
    if let Some(allgs) = binary.data_symbol("runtime.allgs") {
        return Ok(AllgsLocation {
            allgs: allgs.wrapping_add(load_bias),
            allglen: binary.data_symbol("runtime.allglen").map(|a| a.wrapping_add(load_bias)),
            source: AllgsSource::Symtab,
        });
    }
    locate_allgs_from_code(mem, binary, load_bias)
}

/// The code path of [`locate_allgs`], also when symbols exist (tests compare both).
pub fn locate_allgs_from_code(mem: &ProcessMemory, binary: &GoBinary, load_bias: u64) -> Result<AllgsLocation, LocateError> {
    if binary.arch() != Arch::Amd64 {
        return Err(LocateError::NotFound(format!(
            "decoding {ALLGADD} is implemented for amd64 only (this is {:?})",
            binary.arch()
        )));
    }
    let f = binary.function(ALLGADD).ok_or_else(|| LocateError::NotFound(format!("{ALLGADD} is not in .gopclntab")))?;
    let len = f.end.saturating_sub(f.entry).clamp(1, MAX_CODE) as usize;
    let ip = f.entry.wrapping_add(load_bias);
    let code = mem.read_vec(ip, len)?;
    let (allgs, allglen) = find_allgs_in_code(&code, ip).ok_or_else(|| {
        LocateError::NotFound(format!(
            "the code of {ALLGADD} does not have the expected shape (allgs = append(allgs, gp); allglen = len(allgs))"
        ))
    })?;
    Ok(AllgsLocation { allgs, allglen, source: AllgsSource::Code })
}

/// Recovers `runtime.allgs` and `runtime.allglen` from the amd64 code of `runtime.allgadd`
/// loaded at `ip`. Returns addresses in the same address space as `ip`.
///
/// `allgadd` is, in every version from 1.19 to 1.27 (checked against the symbol table of each):
/// ```go
/// lock(&allglock)
/// allgs = append(allgs, gp)                          // reads/writes allgs, allgs+8, allgs+16
/// if &allgs[0] != allgptr { atomicstorep(&allgptr, unsafe.Pointer(&allgs[0])) }
/// atomic.Storeuintptr(&allglen, uintptr(len(allgs))) // MOV r, allgs+8; LEA d, allglen; XCHG [d], r
/// unlock(&allglock)
/// ```
/// The heuristic:
/// * `allgs` is the unique address X such that X, X+8 and X+16 are all accessed as 8-byte
///   RIP-relative memory operands (the append reads the slice's ptr, len and cap) and X+8 is
///   also written (the new length). No other global in the function is a 24-byte slice.
/// * `allglen` is the target of the atomic store of a register last loaded from `allgs+8`:
///   an `XCHG` whose memory operand is either RIP-relative or `[reg]` with `reg` last set by a
///   RIP-relative `LEA` (the compiler emits the latter). A plain `MOV` store of that register
///   is accepted too, so a future non-XCHG atomic store still matches.
///
/// Registers are tracked through the decoder's register-write information, so an intervening
/// write (or a CALL, which clobbers everything) invalidates what a register held.
pub fn find_allgs_in_code(code: &[u8], ip: u64) -> Option<(u64, Option<u64>)> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    // (address, written) of every 8-byte RIP-relative memory operand.
    let mut accesses: Vec<(u64, bool)> = Vec::new();
    let mut insns = Vec::new();
    for insn in &mut decoder {
        if insn.is_invalid() {
            break;
        }
        if insn.is_ip_rel_memory_operand() && insn.memory_size().size() == 8 {
            let access = info.info(&insn);
            let written = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory && writes(access.op_access(i)));
            accesses.push((insn.ip_rel_memory_address(), written));
        }
        insns.push(insn);
    }
    let has = |a: u64| accesses.iter().any(|(x, _)| *x == a);
    let written = |a: u64| accesses.iter().any(|(x, w)| *x == a && *w);
    let mut candidates: Vec<u64> =
        accesses.iter().map(|(a, _)| *a).filter(|&a| has(a + 8) && has(a + 16) && written(a + 8)).collect();
    candidates.sort_unstable();
    candidates.dedup();
    let [allgs] = candidates[..] else { return None };
    let len_addr = allgs + 8;

    // Register tracking for the allglen store.
    #[derive(Clone, Copy, PartialEq)]
    enum Held {
        Nothing,
        Address(u64),
        AllgsLen,
    }
    let mut regs = [Held::Nothing; 16];
    let slot = |r: Register| -> Option<usize> {
        let full = r.full_register();
        (full.is_gpr64()).then(|| full.number())
    };
    let mut xchg_target = None;
    let mut mov_target = None;
    for insn in &insns {
        // 1. Is this the store of len(allgs)?
        let mem_target = |insn: &iced_x86::Instruction| -> Option<u64> {
            if insn.is_ip_rel_memory_operand() {
                return Some(insn.ip_rel_memory_address());
            }
            if insn.memory_index() == Register::None
                && insn.memory_displacement64() == 0
                && let Held::Address(a) = regs[slot(insn.memory_base())?]
            {
                return Some(a);
            }
            None
        };
        let reg_holds_len = |r: Register| slot(r).is_some_and(|s| regs[s] == Held::AllgsLen);
        match insn.code() {
            Code::Xchg_rm64_r64 if insn.op_kind(0) == OpKind::Memory && reg_holds_len(insn.op1_register()) => {
                if let Some(t) = mem_target(insn) {
                    xchg_target = Some(t);
                }
            }
            Code::Mov_rm64_r64 if insn.op_kind(0) == OpKind::Memory && reg_holds_len(insn.op1_register()) => {
                if let Some(t) = mem_target(insn).filter(|t| *t != len_addr) {
                    mov_target.get_or_insert(t);
                }
            }
            _ => {}
        }
        // 2. Forget registers this instruction writes.
        if insn.mnemonic() == Mnemonic::Call {
            regs = [Held::Nothing; 16];
        } else {
            for used in info.info(insn).used_registers() {
                if writes(used.access())
                    && let Some(s) = slot(used.register())
                {
                    regs[s] = Held::Nothing;
                }
            }
        }
        // 3. Learn what it loads.
        if insn.op_count() == 2
            && insn.op_kind(0) == OpKind::Register
            && insn.is_ip_rel_memory_operand()
            && let Some(s) = slot(insn.op0_register())
        {
            match insn.mnemonic() {
                Mnemonic::Lea => regs[s] = Held::Address(insn.ip_rel_memory_address()),
                Mnemonic::Mov if insn.op0_register().is_gpr64() && insn.ip_rel_memory_address() == len_addr => {
                    regs[s] = Held::AllgsLen
                }
                _ => {}
            }
        }
    }
    let allglen = xchg_target.or(mov_target).filter(|a| *a != allgs && *a != len_addr);
    Some((allgs, allglen))
}

fn writes(access: OpAccess) -> bool {
    matches!(access, OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite)
}
