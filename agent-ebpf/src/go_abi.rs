//! Go's internal register ABI (ABIInternal, Go >= 1.17 on amd64): integer arguments in RAX, RBX,
//! RCX, RDI, RSI, R8..R11; results in the same order; the current goroutine's `g` in R14.
//! The C-ABI argument helpers would read the wrong registers, so probes use these instead.

use aya_ebpf::programs::ProbeContext;

/// Integer argument or result `n` (0-based) of a Go function, at entry or at a RET.
#[inline(always)]
pub fn arg(ctx: &ProbeContext, n: u8) -> u64 {
    // SAFETY: ctx.regs points at the kernel's pt_regs for this probe hit; the verifier checks the
    // access is inside the context.
    let regs = unsafe { &*ctx.regs };
    match n {
        0 => regs.rax,
        1 => regs.rbx,
        2 => regs.rcx,
        3 => regs.rdi,
        4 => regs.rsi,
        _ => 0,
    }
}

/// Integer register `n` of the ABI (0 = RAX, 1 = RBX, ... 8 = R11) for an `n` known only at run
/// time (an attach cookie); 0 past R11.
#[inline(always)]
pub fn arg_register(ctx: &ProbeContext, n: u64) -> u64 {
    // SAFETY: as in `arg`. Each register is loaded at its own fixed offset (volatile, so the
    // compiler cannot merge the loads into one at a computed offset, which the verifier refuses
    // for the context) before one value is picked.
    let values = unsafe {
        let regs = &*ctx.regs;
        [
            core::ptr::read_volatile(&regs.rax),
            core::ptr::read_volatile(&regs.rbx),
            core::ptr::read_volatile(&regs.rcx),
            core::ptr::read_volatile(&regs.rdi),
            core::ptr::read_volatile(&regs.rsi),
            core::ptr::read_volatile(&regs.r8),
            core::ptr::read_volatile(&regs.r9),
            core::ptr::read_volatile(&regs.r10),
            core::ptr::read_volatile(&regs.r11),
        ]
    };
    values.get(n as usize).copied().unwrap_or(0)
}

/// The running goroutine's `g` pointer (R14 in every ABIInternal Go function).
#[inline(always)]
pub fn current_g(ctx: &ProbeContext) -> u64 {
    // SAFETY: as in `arg`.
    unsafe { (*ctx.regs).r14 }
}

/// RSP: at a probe before the function pushes RBP, it points at the return address.
#[inline(always)]
pub fn stack_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: as in `arg`.
    unsafe { (*ctx.regs).rsp }
}

/// RBP: Go keeps frame pointers on amd64, so `[RBP]` is the caller's RBP and `[RBP+8]` the
/// return address into the caller, once a function's frame is set up.
#[inline(always)]
pub fn frame_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: as in `arg`.
    unsafe { (*ctx.regs).rbp }
}
