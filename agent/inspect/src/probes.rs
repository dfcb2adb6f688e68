//! Uprobe placement on amd64 Go runtime functions, by decoding with iced-x86.
//!
//! The kernel (arch/x86/kernel/uprobes.c) *emulates* a few instruction classes at a uprobe:
//! `PUSH r64` (0x50-0x57, 0x41 0x50-0x57), `Jcc`/`JMP` rel8/rel32 without a 0x66 prefix, `CALL
//! rel32`, and the one-byte `NOP` 0x90. Everything else is single-stepped out of line, which
//! costs ~5 µs per hit instead of ~1 µs. Go functions start with the stack check
//! `CMP RSP, [R14+0x10]` (single-stepped), so +0 is the worst place for an entry probe.
//!
//! Entry rule ([`place_entry`]): decode from the entry; an instruction is a candidate if it is
//! emulated and comes before any write to the function's integer argument registers, before any
//! CALL, and before the first conditional branch other than the stack-check Jcc (the Jcc right
//! after `CMP RSP|R12, [R14+0x10]`). Preference: `PUSH RBP` (fires once per call, and kernels
//! with `is_uprobe_at_func_entry` keep the caller in user stack traces) > any later emulated
//! instruction still before clobbers (fires once) > the stack-check Jcc itself (fires twice when
//! the stack must grow, since morestack restarts the function at +0).
//!
//! `GoroutineCreated` is placed on every `RET` of `runtime.newproc1`, where RAX holds the new
//! `*g` — never a uretprobe (they crash Go programs whose goroutines migrate threads).

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Formatter, Instruction, InstructionInfoFactory, IntelFormatter, OpAccess, OpKind,
    Register,
};
use serde::Serialize;

use crate::runtime;

/// Which goroutine lifecycle event a probe reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `runtime.newproc1` returned a new goroutine (RET sites).
    GoroutineCreated,
    /// `runtime.gopark` entry.
    GoroutineParked,
    /// `runtime.ready` entry.
    GoroutineReady,
    /// `runtime.goexit1` entry, and [`COROUTINE_EXIT`] entry when the runtime has coroutines.
    GoroutineExited,
    /// `runtime.semacquire1` entry: remembers which semaphore a goroutine is about to wait on
    /// (sync.Mutex, RWMutex, WaitGroup); reports no event of its own.
    SemaphoreAcquire,
}

/// Where a coroutine (`iter.Pull`, Go >= 1.23) exits instead of `runtime.goexit1`: the deferred
/// wrapper of `runtime.corostart`, into which `runtime.coroexit` is inlined (1.23-1.27).
pub const COROUTINE_EXIT: &str = "runtime.corostart.deferwrap1";

impl ProbeKind {
    /// All kinds, in a stable order.
    pub const ALL: [ProbeKind; 5] = [
        ProbeKind::GoroutineCreated,
        ProbeKind::GoroutineParked,
        ProbeKind::GoroutineReady,
        ProbeKind::GoroutineExited,
        ProbeKind::SemaphoreAcquire,
    ];

    /// Name of the eBPF program attached for this kind.
    pub fn program_name(self) -> &'static str {
        match self {
            ProbeKind::GoroutineCreated => "goroutine_created",
            ProbeKind::GoroutineParked => "goroutine_parked",
            ProbeKind::GoroutineReady => "goroutine_ready",
            ProbeKind::GoroutineExited => "goroutine_exited",
            ProbeKind::SemaphoreAcquire => "semaphore_acquire",
        }
    }

    /// Runtime function the probe goes into.
    pub fn function(self) -> &'static str {
        match self {
            ProbeKind::GoroutineCreated => "runtime.newproc1",
            ProbeKind::GoroutineParked => "runtime.gopark",
            ProbeKind::GoroutineReady => "runtime.ready",
            ProbeKind::GoroutineExited => "runtime.goexit1",
            ProbeKind::SemaphoreAcquire => "runtime.semacquire1",
        }
    }

    /// Number of integer register arguments at entry (ABIInternal: RAX, RBX, RCX, RDI, RSI, R8-R11)
    /// in the measured versions (1.19-1.27); None = unknown, assume all nine.
    pub(crate) fn arg_count(self, minor: u32) -> Option<usize> {
        if !runtime::is_measured(minor) {
            return None;
        }
        let facts = match self {
            ProbeKind::GoroutineCreated => runtime::NEWPROC1_ARGS,
            ProbeKind::GoroutineParked => runtime::GOPARK_ARGS,
            ProbeKind::GoroutineReady => runtime::READY_ARGS,
            ProbeKind::GoroutineExited => runtime::GOEXIT1_ARGS,
            ProbeKind::SemaphoreAcquire => runtime::SEMACQUIRE1_ARGS,
        };
        runtime::at(facts, minor)
    }
}

/// Where to attach one uprobe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeSite {
    /// Event kind.
    pub probe: ProbeKind,
    /// Function symbol ("runtime.gopark").
    pub symbol: String,
    /// Bytes from the symbol's entry.
    pub offset: u64,
    /// Link-time virtual address.
    pub address: u64,
    /// Offset in the ELF file (what a uprobe attaches to), correct for PIE.
    pub file_offset: u64,
    /// The instruction at the site, Intel syntax ("push rbp").
    pub instruction: String,
    /// Why this site was chosen.
    pub why: String,
    /// Where the function's return address is when the probe fires.
    pub return_address: ReturnAddressAt,
    /// The ABIInternal integer register (0 = RAX, 1 = RBX, ... 8 = R11) that holds the value the
    /// probe reports at this site: the new `*g` for [`ProbeKind::GoroutineCreated`]; None for
    /// entry probes, which read the function's arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_register: Option<u8>,
}

/// Where a probed function's return address is at the probe site, so a probe can walk the
/// caller's frames (Go keeps frame pointers on amd64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnAddressAt {
    /// `[RSP]`: nothing in the prologue has moved RSP or set RBP yet (RBP is the caller's).
    StackPointer,
    /// `[RBP+8]`: the prologue has set RBP to this function's frame.
    FramePointer,
    /// Elsewhere (RSP moved, RBP not set yet; or a RET site).
    Unknown,
}

pub(crate) const ARG_REGS: [Register; 9] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::RDI,
    Register::RSI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
];

/// Upper bound on instructions decoded for an entry probe.
const MAX_PROLOGUE_INSNS: usize = 64;

/// A chosen in-function site.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub offset: u64,
    pub instruction: String,
    pub why: String,
    pub return_address: ReturnAddressAt,
}

fn format(instr: &Instruction) -> String {
    let mut f = IntelFormatter::new();
    f.options_mut().set_space_after_operand_separator(true);
    f.options_mut().set_show_branch_size(false);
    let mut s = String::new();
    f.format(instr, &mut s);
    s
}

fn is_push(raw: &[u8]) -> bool {
    matches!(raw, [0x50..=0x57] | [0x41, 0x50..=0x57])
}

fn is_rel_branch(raw: &[u8]) -> bool {
    matches!(raw, [0x70..=0x7f, _] | [0xeb, _] | [0xe9, _, _, _, _] | [0x0f, 0x80..=0x8f, _, _, _, _])
}

fn is_emulated(raw: &[u8]) -> bool {
    is_push(raw) || is_rel_branch(raw) || raw == [0x90]
}

/// `CMP RSP|R12, [R14+0x10]` — the Go stack-bound check.
fn is_stack_check_cmp(instr: &Instruction) -> bool {
    instr.code() == Code::Cmp_r64_rm64
        && matches!(instr.op0_register(), Register::RSP | Register::R12)
        && instr.op_count() == 2
        && instr.op_kind(1) == OpKind::Memory
        && instr.memory_base() == Register::R14
        && instr.memory_index() == Register::None
        && instr.memory_displacement64() == 0x10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cand {
    PushRbp,
    StackJcc,
    Other,
}

/// Chooses the cheapest safe entry-probe site. `code` is the function body starting at `entry`.
pub(crate) fn place_entry(func: &str, code: &[u8], entry: u64, nargs: Option<usize>) -> Site {
    let argregs: &[Register] = &ARG_REGS[..nargs.unwrap_or(9).min(9)];
    let arg_desc = if argregs.is_empty() {
        "it takes no register arguments".to_string()
    } else {
        format!("argument registers {} are still intact", argregs.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(","))
    };
    let Prologue { cands, stack_jcc_off, stop_reason, first_text } = scan_prologue(code, entry, argregs);
    let after_check = |off: u64| stack_jcc_off.is_none_or(|j| off > j);
    if let Some((off, _, text, _, ret)) = cands.iter().find(|(off, k, ..)| *k == Cand::PushRbp && after_check(*off)) {
        return Site {
            offset: *off,
            instruction: text.clone(),
            return_address: *ret,
            why: format!(
                "PUSH RBP at {func}+{off}: emulated by the kernel (no single-step, ~1 us/hit vs ~5 us at +0), \
                 after the stack check so it fires once per call even when the stack grows, and uprobe-at-entry \
                 stack walks still see the caller; {arg_desc}"
            ),
        };
    }
    if let Some((off, _, text, what, ret)) = cands.iter().find(|(off, k, ..)| *k == Cand::Other && after_check(*off)) {
        return Site {
            offset: *off,
            instruction: text.clone(),
            return_address: *ret,
            why: format!(
                "{what} at {func}+{off}: emulated by the kernel, reached on every call after the stack check \
                 (fires once per call), before any CALL, body branch or argument write; {arg_desc}"
            ),
        };
    }
    if let Some((off, _, text, _, ret)) = cands.iter().find(|(_, k, ..)| *k == Cand::StackJcc) {
        return Site {
            offset: *off,
            instruction: text.clone(),
            return_address: *ret,
            why: format!(
                "stack-check Jcc at {func}+{off}: emulated by the kernel and {arg_desc}, but it FIRES TWICE for a \
                 call that grows the stack (morestack restarts the function at +0) and the caller is missing \
                 from kernel stack traces (frame not pushed yet); no later emulated instruction precedes {stop_reason}"
            ),
        };
    }
    if let Some((off, _, text, what, ret)) = cands.first() {
        return Site {
            offset: *off,
            instruction: text.clone(),
            return_address: *ret,
            why: format!(
                "{what} at {func}+{off}: the only emulated instruction before {stop_reason}; it precedes the stack \
                 check, so it fires again when the stack grows"
            ),
        };
    }
    Site {
        offset: 0,
        instruction: first_text,
        return_address: ReturnAddressAt::StackPointer,
        why: format!(
            "fallback to {func}+0: no kernel-emulated instruction (PUSH/Jcc/JMP/NOP) before {stop_reason}; +0 is \
             single-stepped (~5 us per hit)"
        ),
    }
}

/// An emulated instruction that could carry the probe: offset, kind, text, why it is emulated,
/// where the return address is there.
type Candidate = (u64, Cand, String, &'static str, ReturnAddressAt);

/// What decoding a function's prologue found for [`place_entry`].
struct Prologue {
    cands: Vec<Candidate>,
    /// The stack check's conditional branch, if any.
    stack_jcc_off: Option<u64>,
    /// Why decoding stopped.
    stop_reason: &'static str,
    first_text: String,
}

/// Decodes the straight-line prologue up to the first CALL, body branch or argument write,
/// collecting the kernel-emulated instructions on the way.
fn scan_prologue(code: &[u8], entry: u64, argregs: &[Register]) -> Prologue {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut instr = Instruction::default();
    let mut prev_stack_cmp = false;
    let mut stack_jcc_off: Option<u64> = None;
    let mut cands: Vec<Candidate> = Vec::new();
    // Registers written by the instructions before the current one.
    let (mut rsp_moved, mut rbp_set) = (false, false);
    let mut stop_reason = "end of decoded prologue";
    let mut first_text = String::new();
    for n in 0..MAX_PROLOGUE_INSNS {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            stop_reason = "undecodable instruction";
            break;
        }
        let off = instr.ip().wrapping_sub(entry);
        let Some(raw) = code.get(off as usize..(off as usize).saturating_add(instr.len())) else {
            break;
        };
        if n == 0 {
            first_text = format(&instr);
        }
        let stack_jcc = prev_stack_cmp && instr.is_jcc_short_or_near();
        if is_emulated(raw) {
            let kind = if raw == [0x55] {
                Cand::PushRbp
            } else if stack_jcc {
                Cand::StackJcc
            } else {
                Cand::Other
            };
            let what = if is_push(raw) {
                "PUSH (push emulation)"
            } else if raw == [0x90] {
                "NOP (nop emulation)"
            } else {
                "relative branch (branch emulation)"
            };
            let return_address = if rbp_set {
                ReturnAddressAt::FramePointer
            } else if rsp_moved {
                ReturnAddressAt::Unknown
            } else {
                ReturnAddressAt::StackPointer
            };
            cands.push((off, kind, format(&instr), what, return_address));
        }
        if stack_jcc {
            stack_jcc_off = Some(off);
        }
        match instr.flow_control() {
            FlowControl::Next => {}
            FlowControl::ConditionalBranch if stack_jcc => {}
            FlowControl::ConditionalBranch => {
                stop_reason = "first conditional branch in the body";
                break;
            }
            FlowControl::Call | FlowControl::IndirectCall => {
                stop_reason = "a CALL (clobbers every register)";
                break;
            }
            _ => {
                stop_reason = "end of straight-line code";
                break;
            }
        }
        let info = factory.info(&instr);
        let written = |reg: Register| {
            info.used_registers().iter().any(|u| {
                matches!(u.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite)
                    && u.register().full_register() == reg
            })
        };
        rsp_moved |= written(Register::RSP);
        rbp_set |= written(Register::RBP);
        let clobbers = argregs.iter().any(|&r| written(r));
        if clobbers {
            stop_reason = "the first write to an argument register";
            break;
        }
        prev_stack_cmp = is_stack_check_cmp(&instr);
    }

    Prologue { cands, stack_jcc_off, stop_reason, first_text }
}

/// The closures that call `runtime.newproc1` on the system stack and hand its result (the new
/// `*g`, in RAX) on: `newproc`'s (every `go` statement) and `newcoro`'s (`iter.Pull`, Go >= 1.23).
/// The runtime's other callers (a debugger's injected call, a `testing/synctest` bubble's first
/// goroutine) are rare; goroutines created there are learned at their first event.
pub const CREATION_CALLERS: [&str; 2] = ["runtime.newproc.func1", "runtime.newcoro.func1"];

/// Most instructions scanned after a call for an emulated one.
const MAX_AFTER_CALL_INSNS: usize = 32;

/// A site right after a call where an integer argument register still holds the call's result.
#[derive(Debug, Clone)]
pub(crate) struct ResultSite {
    pub site: Site,
    /// ABIInternal integer register index (0 = RAX, 1 = RBX, ... 8 = R11) holding the result.
    pub register: u8,
}

fn is_call_rel32(raw: &[u8]) -> bool {
    matches!(raw, [0xe8, _, _, _, _])
}

/// For every `CALL callee` in `code`: the first instruction after it that the kernel emulates
/// (PUSH, relative JMP/Jcc/CALL, NOP), provided it is reached only by falling through from the
/// call (no branch of the function lands between them) and the call's result (RAX) is still in
/// an argument register there, followed through register-to-register MOVs. Errors name the first
/// call without such a site.
pub(crate) fn place_after_calls(func: &str, code: &[u8], entry: u64, callee: u64) -> Result<Vec<ResultSite>, String> {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let instrs: Vec<Instruction> = decoder.iter().take_while(|i| !i.is_invalid()).collect();
    let branch_targets: std::collections::HashSet<u64> = instrs
        .iter()
        .filter(|i| matches!(i.op0_kind(), OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64))
        .map(Instruction::near_branch_target)
        .collect();
    let raw = |i: &Instruction| {
        let off = i.ip().wrapping_sub(entry) as usize;
        code.get(off..off.saturating_add(i.len())).unwrap_or_default()
    };
    let mut sites = Vec::new();
    for (n, call) in instrs.iter().enumerate() {
        if !(is_call_rel32(raw(call)) && call.near_branch_target() == callee) {
            continue;
        }
        let call_off = call.ip() - entry;
        let after = &instrs[n + 1..instrs.len().min(n + 1 + MAX_AFTER_CALL_INSNS)];
        sites.push(site_after_call(func, call_off, after, &branch_targets, entry, &raw)?);
    }
    if sites.is_empty() {
        return Err(format!("{func} has no CALL to the function"));
    }
    Ok(sites)
}

fn site_after_call<'c>(
    func: &str,
    call_off: u64,
    after: &[Instruction],
    branch_targets: &std::collections::HashSet<u64>,
    entry: u64,
    raw: &dyn Fn(&Instruction) -> &'c [u8],
) -> Result<ResultSite, String> {
    let mut factory = InstructionInfoFactory::new();
    let mut holders = vec![Register::RAX];
    for instr in after {
        let off = instr.ip() - entry;
        if branch_targets.contains(&instr.ip()) {
            return Err(format!("{func}+{off}: a branch lands after the call at +{call_off}"));
        }
        let bytes = raw(instr);
        if is_emulated(bytes) || is_call_rel32(bytes) {
            let register = holders.iter().find_map(|h| ARG_REGS.iter().position(|r| r == h));
            let register = register
                .ok_or_else(|| format!("{func}+{off}: the result of the call at +{call_off} is in no argument register"))?;
            return Ok(ResultSite {
                site: Site {
                    offset: off,
                    instruction: format(instr),
                    why: format!(
                        "first kernel-emulated instruction after the call at {func}+{call_off} (~1 us per hit instead of \
                         ~5 us at a single-stepped RET), reached only from that call; the new *g is in {:?}",
                        ARG_REGS[register]
                    ),
                    return_address: ReturnAddressAt::Unknown,
                },
                register: register as u8,
            });
        }
        if instr.flow_control() != FlowControl::Next {
            return Err(format!("{func}+{off}: control flow leaves the straight line after the call at +{call_off}"));
        }
        track_copies(&mut holders, instr, &mut factory);
        if holders.is_empty() {
            return Err(format!("{func}+{off}: the result of the call at +{call_off} is overwritten"));
        }
    }
    Err(format!("no emulated instruction within {MAX_AFTER_CALL_INSNS} instructions after {func}+{call_off}"))
}

/// Updates the registers holding a value across one instruction: `MOV r64, r64` from a holder
/// adds the destination; any other write to a holder removes it.
fn track_copies(holders: &mut Vec<Register>, instr: &Instruction, factory: &mut InstructionInfoFactory) {
    let copy_from_holder = matches!(instr.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64)
        && instr.op0_kind() == OpKind::Register
        && instr.op1_kind() == OpKind::Register
        && holders.contains(&instr.op1_register());
    let info = factory.info(instr);
    let written: Vec<Register> = info
        .used_registers()
        .iter()
        .filter(|u| matches!(u.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite))
        .map(|u| u.register().full_register())
        .collect();
    holders.retain(|h| !written.contains(h));
    if copy_from_holder {
        holders.push(instr.op0_register());
    }
}

/// Every one-byte `RET` (0xC3) in `code` (decoded linearly from `entry`): (offset, text).
pub(crate) fn find_rets(code: &[u8], entry: u64) -> Vec<(u64, String)> {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut out = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        let off = instr.ip().wrapping_sub(entry);
        if instr.code() == Code::Retnq && code.get(off as usize) == Some(&0xc3) && instr.len() == 1 {
            out.push((off, format(&instr)));
        }
    }
    out
}

/// Memory operands with a base register (not RIP/RSP) and no index anywhere in `code`:
/// (displacement, written, size in bytes; 0 for LEA and for `ADD reg, imm` whose immediate is
/// recorded as the displacement).
pub(crate) fn displacements(code: &[u8], entry: u64) -> Vec<(u64, bool, usize)> {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut instr = Instruction::default();
    let mut out = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if matches!(instr.code(), Code::Add_rm64_imm8 | Code::Add_rm64_imm32 | Code::Add_RAX_imm32)
            && instr.op0_kind() == OpKind::Register
        {
            // `ADDQ $off, reg` computes a field address the way LEA does (e.g. &c.lock).
            out.push((instr.immediate64(), false, 0));
            continue;
        }
        if instr.is_invalid() || !(0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Memory) {
            continue;
        }
        let base = instr.memory_base();
        if matches!(base, Register::None | Register::RIP | Register::RSP | Register::ESP)
            || instr.memory_index() != Register::None
        {
            continue;
        }
        let info = factory.info(&instr);
        let write = info
            .used_memory()
            .iter()
            .any(|m| matches!(m.access(), OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite | OpAccess::ReadCondWrite));
        let size = if instr.mnemonic() == iced_x86::Mnemonic::Lea { 0 } else { instr.memory_size().size() };
        out.push((instr.memory_displacement64(), write, size));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // go1.21+ gopark prologue: CMP RSP,[R14+0x10]; JBE rel32; PUSH RBP; MOV RBP,RSP; SUB RSP,0x10;
    // MOV RDX,[R14+0x30]; NOP
    const GOPARK_121: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xdc, 0x00, 0x00, 0x00, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0x49, 0x8b,
        0x56, 0x30, 0x90,
    ];
    // go1.19: CMP; JBE rel32; SUB RSP,0x18; MOV [RSP+0x10],RBP; LEA RBP,[RSP+0x10]; MOV RDX,[R14+0x30]; NOP
    const GOPARK_119: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xe9, 0x00, 0x00, 0x00, 0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0x6c, 0x24, 0x10, 0x48,
        0x8d, 0x6c, 0x24, 0x10, 0x49, 0x8b, 0x56, 0x30, 0x90,
    ];

    #[test]
    fn push_rbp_preferred() {
        let s = place_entry("runtime.gopark", GOPARK_121, 0x1000, Some(5));
        assert_eq!(s.offset, 10);
        assert_eq!(s.instruction, "push rbp");
        assert_eq!(s.return_address, ReturnAddressAt::StackPointer);
    }

    #[test]
    fn go119_uses_nop_after_frame() {
        let s = place_entry("runtime.gopark", GOPARK_119, 0x1000, Some(5));
        assert_eq!(s.offset, 28, "{s:?}");
        assert_eq!(s.instruction, "nop");
        assert_eq!(s.return_address, ReturnAddressAt::FramePointer, "after LEA RBP, [RSP+0x10]");
        // If RDX counted as an argument (all nine do not include it) it would still be 28;
        // clobbering RAX before the NOP leaves only the stack-check Jcc.
        let mut code = GOPARK_119.to_vec();
        code[24..28].copy_from_slice(&[0x49, 0x8b, 0x46, 0x30]); // MOV RAX,[R14+0x30]
        let s = place_entry("runtime.gopark", &code, 0x1000, None);
        assert_eq!(s.offset, 4, "{s:?}");
        assert!(s.why.contains("FIRES TWICE"));
        assert_eq!(s.return_address, ReturnAddressAt::StackPointer);
    }

    #[test]
    fn fallback_to_zero() {
        // MOV RAX, RBX; RET
        let s = place_entry("f", &[0x48, 0x89, 0xd8, 0xc3], 0x1000, None);
        assert_eq!(s.offset, 0);
        assert!(s.why.contains("fallback"));
    }

    // go1.26 runtime.newproc.func1 at 0x1000, newproc1 at 0x1060: ... CALL newproc1;
    // MOV RDX,[R14+0x30]; MOV RDX,[RDX+0xd0]; MOV RBX,RAX; MOV ECX,1; MOV RAX,RDX; NOPL; CALL runqput
    const NEWPROC_FUNC1_126: &[u8] = &[
        0x31, 0xff, 0x31, 0xf6, 0x66, 0x90, 0xe8, 0x5b, 0x00, 0x00, 0x00, 0x49, 0x8b, 0x56, 0x30, 0x48, 0x8b, 0x92, 0xd0, 0x00,
        0x00, 0x00, 0x48, 0x89, 0xc3, 0xb9, 0x01, 0x00, 0x00, 0x00, 0x48, 0x89, 0xd0, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xe8, 0x9b,
        0x50, 0x00, 0x00, 0xc3,
    ];

    #[test]
    fn result_followed_into_rbx_to_the_next_call() {
        let sites = place_after_calls("runtime.newproc.func1", NEWPROC_FUNC1_126, 0x1000, 0x1066).unwrap();
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].site.offset, 38, "{:?}", sites[0]);
        assert!(sites[0].site.instruction.starts_with("call"), "{:?}", sites[0]);
        assert_eq!(sites[0].register, 1, "RBX");
    }

    #[test]
    fn result_overwritten_before_any_emulated_instruction() {
        // CALL f; MOV RAX, RDX; NOPL; CALL g: RAX was the only holder.
        let code = [0xe8, 0x00, 0x01, 0x00, 0x00, 0x48, 0x89, 0xd0, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xe8, 0x00, 0x00, 0x00, 0x00];
        let err = place_after_calls("f", &code, 0x1000, 0x1105).unwrap_err();
        assert!(err.contains("overwritten") || err.contains("no argument register"), "{err}");
    }

    #[test]
    fn a_branch_into_the_block_refuses_the_site() {
        // JMP +5 (lands on the instruction after the call); CALL f; MOV RBX, RAX; JMP back.
        let code = [0xeb, 0x05, 0xe8, 0x00, 0x01, 0x00, 0x00, 0x48, 0x89, 0xc3, 0xeb, 0xf4];
        let err = place_after_calls("f", &code, 0x1000, 0x1107).unwrap_err();
        assert!(err.contains("branch lands"), "{err}");
    }

    #[test]
    fn jcc_right_after_the_call_keeps_rax() {
        // CALL f; CMP dword [rip+0], 0; JNE +7
        let code = [0xe8, 0x00, 0x01, 0x00, 0x00, 0x83, 0x3d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x75, 0x07, 0x90, 0xc3];
        let sites = place_after_calls("f", &code, 0x1000, 0x1105).unwrap();
        assert_eq!((sites[0].site.offset, sites[0].register), (12, 0));
    }

    #[test]
    fn rets() {
        // push rbp; ret; int3; ret
        let r = find_rets(&[0x55, 0xc3, 0xcc, 0xc3], 0x2000);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(r[0].1, "ret");
    }
}
