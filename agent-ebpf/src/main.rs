//! goscope's uprobes on the Go runtime. Each probe is a thin `fn x(ctx)` calling `try_x`; a
//! probe that cannot read what it needs drops the event (never faults the target), counts the
//! failure in the target's config and logs it (aya-log, rate-limited).
#![no_std]
#![no_main]

mod go_abi;

use agent_ebpf::{DEFAULT_RING_BYTES, EventKind, MAX_TARGETS, PARK_FRAMES, ProbeHit, RawEvent, ReturnAddress, TargetConfig};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::ProbeContext,
};
use aya_log_ebpf::warn;

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "TARGETS")]
static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Goroutines between `runtime.semacquire1` and their park, over all targets. LRU: a semaphore
/// acquired without parking leaves an entry that ages out (or is overwritten by the next call).
const MAX_SEMA_WAITS: u32 = 16384;

/// g structs of different processes can share an address.
#[repr(C)]
#[derive(Clone, Copy)]
struct SemaWaitKey {
    g: u64,
    pid: u32,
    _pad: u32,
}

#[map(name = "SEMA_WAITS")]
static SEMA_WAITS: LruHashMap<SemaWaitKey, u64> = LruHashMap::with_max_entries(MAX_SEMA_WAITS, 0);

/// Reads a u64 at `base + off` in the target's memory.
#[inline(always)]
fn read_u64(base: u64, off: u32) -> Result<u64, i64> {
    if base == 0 {
        return Err(-1);
    }
    // SAFETY: bpf_probe_read_user copies from user memory and fails cleanly on a bad address.
    unsafe { bpf_probe_read_user((base + off as u64) as *const u64) }.map_err(|e| e as i64)
}

/// The goid of the user goroutine the current M runs: `g.m.curg.goid`. Correct both on a user
/// goroutine's stack (where curg == g) and on the system stack (g0).
#[inline(always)]
fn curg_goid(cfg: &TargetConfig, g: u64) -> u64 {
    let curg = read_u64(g, cfg.g_m).and_then(|m| read_u64(m, cfg.m_curg));
    match curg {
        Ok(curg) if curg != 0 => read_u64(curg, cfg.g_goid).unwrap_or(0),
        _ => 0,
    }
}

/// Looks up this process's config and counts the hit; None for processes goscope does not watch.
#[inline(always)]
fn target(hit: ProbeHit) -> Option<(u32, u32, &'static TargetConfig)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let cfg = TARGETS.get_ptr_mut(&pid)?;
    // SAFETY: the pointer is the map's value slot, valid while the program runs; the other
    // fields are only read (userspace replaces an entry only when it attaches). The increment is
    // not atomic (the BPF target has no 64-bit fetch_add in core): two CPUs hitting one probe
    // of one process at the same instant may count once, so the count is a slight underestimate.
    unsafe {
        let slot = core::ptr::addr_of_mut!((*cfg).hits[hit as usize]);
        slot.write_volatile(slot.read_volatile() + 1);
        Some((pid, pid_tgid as u32, &*cfg))
    }
}

/// Unread bytes in [`EVENTS`] at which a probe wakes the reader (a quarter of the ring, set by
/// the loader). Below it no probe sends a wakeup: the reader polls the ring on a short timer,
/// so a busy target pays no wakeup per event. 0 (never set) wakes the reader for every event.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

/// bpf_ringbuf_query's flag for the bytes not yet consumed; bpf_ringbuf_output's flags.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// One ring record: the kernel's 8-byte header and the event.
const RECORD_BYTES: u64 = 8 + size_of::<RawEvent>() as u64;

/// Wake the reader once, as the unread data crosses the threshold (not for every event above
/// it: the reader is already on its way).
#[inline(always)]
fn wakeup_flags() -> u64 {
    // SAFETY: a read of a constant the loader patched before the program was loaded.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if threshold == 0 {
        return 0;
    }
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA);
    if pending >= threshold && pending < threshold + RECORD_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }
}

#[inline(always)]
fn emit(event: RawEvent) {
    if EVENTS.output(&event, wakeup_flags()).is_err()
        && let Some(lost) = LOST.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot: no other program writes it concurrently on this CPU.
        unsafe { *lost += 1 };
    }
}

/// Runs a probe's body; a failure is counted in the target's config for `probe` and logged
/// through aya-log at the 1st, 2nd, 4th, 8th... failure in that process (nothing is logged, and
/// nothing costs, while reads succeed).
#[inline(always)]
fn run_probe(ctx: &ProbeContext, probe: ProbeHit, body: impl Fn(&ProbeContext) -> Result<(), i64>) -> u32 {
    if let Err(error) = body(ctx) {
        count_failure(ctx, probe, error);
    }
    0
}

#[inline(always)]
fn count_failure(ctx: &ProbeContext, probe: ProbeHit, error: i64) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = TARGETS.get_ptr_mut(&pid) else { return };
    // SAFETY: the map's value slot, valid while the program runs; counted as `target` counts hits.
    let failures = unsafe {
        let slot = core::ptr::addr_of_mut!((*cfg).read_failures[probe as usize]);
        let failures = slot.read_volatile() + 1;
        slot.write_volatile(failures);
        failures
    };
    if failures & (failures - 1) == 0 {
        warn!(
            ctx,
            "probe {}: reading the target's memory failed (error {}), {} failures in PID {}",
            probe.program_name(),
            error,
            failures,
            pid
        );
    }
}

#[inline(always)]
fn event(kind: EventKind, pid: u32, tid: u32, goid: u64) -> RawEvent {
    RawEvent {
        // SAFETY: plain helper call without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        goid,
        pid,
        tid,
        kind: kind as u8,
        ..RawEvent::default()
    }
}

/// Right after `runtime.newproc1` returns (at the first kernel-emulated instruction of its
/// caller, or at its RETs on binaries where none fits): the attach cookie names the ABI register
/// that holds the new `*g` there (0 = RAX); R14 is g0, whose M runs the creator.
#[uprobe]
pub fn goroutine_created(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::Created, try_goroutine_created)
}

// Inlined: a BPF subprogram returns one register, too few for a Result with a payload.
#[inline(always)]
fn try_goroutine_created(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((pid, tid, cfg)) = target(ProbeHit::Created) else { return Ok(()) };
    // SAFETY: reads the cookie of the attach point that fired (0 when it has none).
    let register = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let newg = go_abi::arg_register(ctx, register);
    let mut ev = event(EventKind::Created, pid, tid, read_u64(newg, cfg.g_goid)?);
    ev.peer_goid =
        if cfg.g_parent_goid != 0 { read_u64(newg, cfg.g_parent_goid)? } else { curg_goid(cfg, go_abi::current_g(ctx)) };
    ev.addr = read_u64(newg, cfg.g_gopc)?;
    ev.aux = read_u64(newg, cfg.g_startpc)?;
    emit(ev);
    Ok(())
}

/// `runtime.gopark(unlockf, lock, reason, ...)` on the parking goroutine's own stack.
#[uprobe]
pub fn goroutine_parked(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::Parked, try_goroutine_parked)
}

// Inlined: a BPF subprogram returns one register, too few for a Result with a payload.
#[inline(always)]
fn try_goroutine_parked(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((pid, tid, cfg)) = target(ProbeHit::Parked) else { return Ok(()) };
    let g = go_abi::current_g(ctx);
    let mut ev = event(EventKind::Parked, pid, tid, read_u64(g, cfg.g_goid)?);
    ev.addr = go_abi::arg(ctx, 1);
    ev.aux = g;
    // waitReason is a uint8; the upper bits of the register are unspecified.
    ev.wait_reason = go_abi::arg(ctx, 2) as u8;
    if is_sema_wait(cfg, ev.wait_reason) {
        let key = SemaWaitKey { g, pid, _pad: 0 };
        // SAFETY: the value is copied out before the entry is removed.
        if let Some(addr) = unsafe { SEMA_WAITS.get(&key) } {
            ev.sema_addr = *addr;
            let _ = SEMA_WAITS.remove(&key);
        }
    }
    ev.return_pcs = return_pcs(ctx, cfg);
    emit(ev);
    Ok(())
}

#[inline(always)]
fn is_sema_wait(cfg: &TargetConfig, reason: u8) -> bool {
    let word = cfg.sema_wait_reasons[usize::from(reason >> 6) & 3];
    (word >> (reason & 63)) & 1 != 0
}

/// The return addresses from gopark's caller outwards, by walking frame pointers; zeros after
/// the last one read.
#[inline(always)]
fn return_pcs(ctx: &ProbeContext, cfg: &TargetConfig) -> [u64; PARK_FRAMES] {
    let mut pcs = [0u64; PARK_FRAMES];
    let (mut pc, mut fp) = if cfg.park_return_address == ReturnAddress::AtStackPointer as u32 {
        match read_u64(go_abi::stack_pointer(ctx), 0) {
            Ok(pc) => (pc, go_abi::frame_pointer(ctx)),
            Err(_) => return pcs,
        }
    } else if cfg.park_return_address == ReturnAddress::AboveFramePointer as u32 {
        match read_frame(go_abi::frame_pointer(ctx)) {
            Some(frame) => frame,
            None => return pcs,
        }
    } else {
        return pcs;
    };
    for slot in pcs.iter_mut() {
        *slot = pc;
        match read_frame(fp) {
            Some((next_pc, next_fp)) if next_pc != 0 => (pc, fp) = (next_pc, next_fp),
            _ => break,
        }
    }
    pcs
}

/// A frame record at `fp`: (return address `[fp+8]`, caller's frame pointer `[fp]`).
#[inline(always)]
fn read_frame(fp: u64) -> Option<(u64, u64)> {
    if fp == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user copies from user memory and fails cleanly on a bad address.
    let [saved_fp, ret] = unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }.ok()?;
    Some((ret, saved_fp))
}

/// `runtime.semacquire1(addr *uint32, ...)` on the acquiring goroutine's stack: remembers the
/// semaphore for the gopark probe (sync primitives park with gopark's lock = a runtime-internal
/// semaRoot lock, not the user's Mutex/RWMutex/WaitGroup).
#[uprobe]
pub fn semaphore_acquire(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::SemaphoreAcquire, try_semaphore_acquire)
}

// Inlined: a BPF subprogram returns one register, too few for a Result with a payload.
#[inline(always)]
fn try_semaphore_acquire(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((pid, _, _)) = target(ProbeHit::SemaphoreAcquire) else { return Ok(()) };
    let key = SemaWaitKey { g: go_abi::current_g(ctx), pid, _pad: 0 };
    SEMA_WAITS.insert(&key, &go_abi::arg(ctx, 0), 0).map_err(i64::from)
}

/// `runtime.ready(gp, ...)` runs on the system stack of the M whose user goroutine woke `gp`.
#[uprobe]
pub fn goroutine_ready(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::Ready, try_goroutine_ready)
}

// Inlined: a BPF subprogram returns one register, too few for a Result with a payload.
#[inline(always)]
fn try_goroutine_ready(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((pid, tid, cfg)) = target(ProbeHit::Ready) else { return Ok(()) };
    let gp = go_abi::arg(ctx, 0);
    let mut ev = event(EventKind::Ready, pid, tid, read_u64(gp, cfg.g_goid)?);
    ev.peer_goid = curg_goid(cfg, go_abi::current_g(ctx));
    emit(ev);
    Ok(())
}

/// `runtime.goexit1` on the exiting goroutine's stack.
#[uprobe]
pub fn goroutine_exited(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::Exited, try_goroutine_exited)
}

// Inlined: a BPF subprogram returns one register, too few for a Result with a payload.
#[inline(always)]
fn try_goroutine_exited(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((pid, tid, cfg)) = target(ProbeHit::Exited) else { return Ok(()) };
    let g = go_abi::current_g(ctx);
    emit(event(EventKind::Exited, pid, tid, read_u64(g, cfg.g_goid)?));
    Ok(())
}

// The same probes as `uprobe.multi` programs: the agent attaches these through BPF links on
// kernels that support them (6.6+, pid filter on the whole process), which needs CAP_BPF +
// CAP_PERFMON, where a perf event of the uprobe PMU needs CAP_SYS_ADMIN.
#[uprobe(multi)]
pub fn goroutine_created_multi(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::Created, try_goroutine_created)
}

#[uprobe(multi)]
pub fn goroutine_parked_multi(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::Parked, try_goroutine_parked)
}

#[uprobe(multi)]
pub fn semaphore_acquire_multi(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::SemaphoreAcquire, try_semaphore_acquire)
}

#[uprobe(multi)]
pub fn goroutine_ready_multi(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::Ready, try_goroutine_ready)
}

#[uprobe(multi)]
pub fn goroutine_exited_multi(ctx: ProbeContext) -> u32 {
    run_probe(&ctx, ProbeHit::Exited, try_goroutine_exited)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
