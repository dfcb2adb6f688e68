//! Frame-pointer stack walks over another process's goroutine stacks, batched: every walk
//! proceeds as far as the stack bytes already read allow, then all walks that need more memory
//! get it in one batched read.
//!
//! amd64 and arm64 Go frames (1.21+: `PUSHQ BP; MOVQ SP, BP`; 1.19: `SUBQ $N, SP; MOVQ BP,
//! N-8(SP); LEAQ N-8(SP), BP`) all leave a frame record at the frame pointer: `[bp]` = the
//! caller's frame pointer, `[bp+8]` = the return address into the caller.
use std::sync::Arc;

use serde::Serialize;

use goscope_inspect::Location;

/// One logical frame of a goroutine's stack. A physical frame (one function activation on the
/// stack) whose code has calls inlined into it at `pc` is several logical frames, innermost
/// first, as in the runtime's traceback: the inlined ones (`inlined: true`, printed by the
/// runtime without "+0x..") and then the physical function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackFrame {
    /// Runtime address: where the goroutine resumes (first frame) or the return address (callers),
    /// as the runtime's traceback prints it ("+0x45" = `pc - entry`). The same for every logical
    /// frame of one physical frame.
    pub pc: u64,
    /// Function, file and line. For return addresses it is looked up at `pc - 1` (the call
    /// instruction), as the runtime does, except after an injected call (asyncPreempt, sigpanic).
    /// `entry` is the physical function's, also for inlined frames.
    pub location: Option<Arc<Location>>,
    /// The call was inlined into the next frame's function (same `pc`): no frame of its own.
    pub inlined: bool,
}

/// The logical frames at one PC, innermost first (never empty).
pub(crate) type Frames = Arc<[Arc<Location>]>;

/// Why a stack walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackEnd {
    /// Reached `runtime.goexit`, the bottom of every goroutine stack: the stack is complete.
    Goexit,
    /// The frame pointer chain ended (zero frame pointer or return address), e.g. a goroutine that
    /// has not started running yet.
    ChainEnd,
    /// Stopped at the frame limit.
    Truncated,
    /// A frame pointer outside the goroutine's stack, misaligned, or not increasing.
    BadFramePointer,
    /// A return address outside Go code (cgo frames without frame pointers, or corruption).
    UnknownPc,
    /// Stack memory could not be read.
    Unreadable,
    /// The goroutine is running on a thread: it has no saved context (as the runtime says:
    /// "goroutine running on other thread; stack unavailable").
    Running,
    /// The goroutine changed while being read, twice; its stack is left out rather than guessed.
    Inconsistent,
    /// Not read (dead or idle g, or stacks were not asked for).
    NotRead,
}

/// Where a walk starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkStart {
    pub pc: u64,
    pub sp: u64,
    /// None: not saved (syscall on Go < 1.23): taken from `[sp-16]`, see `Walk::init`.
    pub bp: Option<u64>,
    pub lo: u64,
    pub hi: u64,
    /// The first PC is the instruction after `CALL runtime.morestack*` in a function prologue:
    /// that function has not built its frame yet, so its return address is at `[sp]`.
    pub in_morestack_stub: bool,
}

/// What the walker needs from the binary.
pub(crate) trait Symbols {
    /// Logical frames at runtime PC `pc` (innermost first, not empty); `call_site`: look up
    /// `pc - 1` when `pc` is past the entry.
    fn frames(&mut self, pc: u64, call_site: bool) -> Option<Frames>;
    fn is_goexit(&self, pc: u64) -> bool;
    /// asyncPreempt / sigpanic: the next frame's PC is not a return address.
    fn is_injected_call(&self, pc: u64) -> bool;
}

/// A walk in progress.
#[derive(Debug)]
pub(crate) struct Walk {
    pub frames: Vec<StackFrame>,
    pub end: Option<StackEnd>,
    pc: u64,
    call_site: bool,
    /// The current frame (`pc`) is already in `frames`.
    pushed: bool,
    bp: u64,
    /// Read the return address at this address instead of following `bp` (morestack stub).
    ret_at: Option<u64>,
    lo: u64,
    hi: u64,
    window_start: u64,
    window: Vec<u8>,
}

impl Walk {
    /// Bytes to read first: from 16 bytes below `sp` (where a syscall's frame pointer is found
    /// on Go < 1.23) up to `window` bytes, within the stack.
    pub fn first_window(s: &WalkStart, window: usize) -> (u64, usize) {
        let start = s.sp.saturating_sub(16).max(s.lo);
        let len = s.hi.saturating_sub(start).min(window as u64) as usize;
        (start, len)
    }

    /// Starts a walk given the bytes of [`Walk::first_window`] (None: unreadable).
    pub fn init(s: &WalkStart, window: Option<(u64, Vec<u8>)>) -> Walk {
        let (window_start, window) = window.unwrap_or((0, Vec::new()));
        let mut w = Walk {
            frames: Vec::new(),
            end: None,
            pc: s.pc,
            call_site: true,
            pushed: false,
            bp: s.bp.unwrap_or(0),
            ret_at: s.in_morestack_stub.then_some(s.sp),
            lo: s.lo,
            hi: s.hi,
            window_start,
            window,
        };
        if s.bp.is_none() {
            // A goroutine in a syscall on Go < 1.23 has no saved frame pointer. The function
            // holding syscallpc called entersyscall (and then the syscall wrapper) from SP =
            // syscallsp; each callee's prologue saved the caller's BP right below its return
            // address, at syscallsp-16 (1.21+ `PUSHQ BP`, 1.19 `MOVQ BP, N-8(SP)` after
            // `SUBQ $N, SP`, same slot), so that slot holds the frame pointer of syscallpc's frame.
            match w.read16(s.sp.wrapping_sub(16)) {
                Some((bp, _)) => w.bp = bp,
                None => w.end = Some(StackEnd::Unreadable),
            }
        }
        w
    }

    fn read16(&self, addr: u64) -> Option<(u64, u64)> {
        let off = addr.checked_sub(self.window_start)? as usize;
        let b = self.window.get(off..off.checked_add(16)?)?;
        Some((u64::from_le_bytes(b[..8].try_into().ok()?), u64::from_le_bytes(b[8..].try_into().ok()?)))
    }

    fn read8(&self, addr: u64) -> Option<u64> {
        let off = addr.checked_sub(self.window_start)? as usize;
        let b = self.window.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Walks as far as the window allows. Returns the range to read next, or None when done.
    pub fn advance(&mut self, syms: &mut impl Symbols, max_frames: usize, window: usize) -> Option<(u64, usize)> {
        while self.end.is_none() {
            if !self.pushed {
                if self.frames.len() >= max_frames {
                    self.end = Some(StackEnd::Truncated);
                    break;
                }
                let Some(frames) = syms.frames(self.pc, self.call_site) else {
                    self.end = Some(StackEnd::UnknownPc);
                    break;
                };
                if !self.push(&frames, max_frames) {
                    self.end = Some(StackEnd::Truncated);
                    break;
                }
                self.pushed = true;
                if syms.is_goexit(self.pc) {
                    self.end = Some(StackEnd::Goexit);
                    break;
                }
            }
            let next_call_site = !syms.is_injected_call(self.pc);
            if let Some(at) = self.ret_at {
                let Some(ret) = self.read8(at) else {
                    self.end = Some(StackEnd::Unreadable);
                    break;
                };
                self.ret_at = None;
                self.next_frame(ret, next_call_site);
                continue;
            }
            if self.bp == 0 {
                self.end = Some(StackEnd::ChainEnd);
                break;
            }
            if !self.bp.is_multiple_of(8) || self.bp < self.lo || self.bp.saturating_add(16) > self.hi {
                self.end = Some(StackEnd::BadFramePointer);
                break;
            }
            let Some((caller_bp, ret)) = self.read16(self.bp) else {
                let len = self.hi.saturating_sub(self.bp).min(window as u64) as usize;
                return Some((self.bp, len));
            };
            if ret == 0 {
                self.end = Some(StackEnd::ChainEnd);
                break;
            }
            if caller_bp != 0 && caller_bp <= self.bp {
                // Keep the return address (it sits in this frame's record, which is valid);
                // the chain above it is not.
                self.next_frame(ret, next_call_site);
                self.bp = 0;
                if self.frames.len() < max_frames
                    && let Some(frames) = syms.frames(self.pc, self.call_site)
                {
                    self.push(&frames, max_frames);
                }
                self.end = Some(if syms.is_goexit(self.pc) { StackEnd::Goexit } else { StackEnd::BadFramePointer });
                break;
            }
            self.next_frame(ret, next_call_site);
            self.bp = caller_bp;
        }
        None
    }

    /// Pushes the logical frames of the physical frame at `self.pc`, as many as `max_frames`
    /// allows; false if some did not fit.
    fn push(&mut self, frames: &Frames, max_frames: usize) -> bool {
        let n = frames.len();
        for (i, loc) in frames.iter().enumerate() {
            if self.frames.len() >= max_frames {
                return false;
            }
            self.frames.push(StackFrame { pc: self.pc, location: Some(Arc::clone(loc)), inlined: i + 1 < n });
        }
        true
    }

    fn next_frame(&mut self, pc: u64, call_site: bool) {
        self.pc = pc;
        self.call_site = call_site;
        self.pushed = false;
    }

    /// Supplies the bytes asked for by [`Walk::advance`] (None: unreadable).
    pub fn supply(&mut self, start: u64, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                self.window_start = start;
                self.window.clear();
                self.window.extend_from_slice(b);
            }
            None => self.end = Some(StackEnd::Unreadable),
        }
    }

    /// Frees the window once the walk is over.
    pub fn finish(&mut self) {
        self.window = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeSyms;
    impl Symbols for FakeSyms {
        /// Functions at 0x100 boundaries; in 0x5000..0x5100, two calls are inlined ("g", "h").
        fn frames(&mut self, pc: u64, call_site: bool) -> Option<Frames> {
            (0x1000..0x9000).contains(&pc).then(|| {
                let at = |function: String| {
                    Arc::new(Location {
                        function,
                        file: "x.go".into(),
                        line: (pc - u64::from(call_site)) as u32,
                        entry: pc & !0xff,
                    })
                };
                let mut v = Vec::new();
                if (0x5000..0x5100).contains(&pc) {
                    v.extend([at("h".into()), at("g".into())]);
                }
                v.push(at(format!("f{:x}", pc & !0xff)));
                Frames::from(v)
            })
        }
        fn is_goexit(&self, pc: u64) -> bool {
            (0x8000..0x8100).contains(&pc)
        }
        fn is_injected_call(&self, pc: u64) -> bool {
            (0x7000..0x7100).contains(&pc)
        }
    }

    /// A fake stack at 0x10000..0x10100 with words at the given offsets.
    fn stack(words: &[(u64, u64)]) -> Vec<u8> {
        let mut v = vec![0u8; 0x100];
        for (off, val) in words {
            v[*off as usize..*off as usize + 8].copy_from_slice(&val.to_le_bytes());
        }
        v
    }

    fn run(start: WalkStart, mem: &[u8], window: usize) -> Walk {
        let base = 0x10000;
        let (ws, wl) = Walk::first_window(&start, window);
        let w0 = mem[(ws - base) as usize..(ws - base) as usize + wl].to_vec();
        let mut w = Walk::init(&start, Some((ws, w0)));
        let mut rounds = 0;
        while let Some((a, l)) = w.advance(&mut FakeSyms, 64, window) {
            rounds += 1;
            assert!(rounds < 100);
            let off = (a - base) as usize;
            w.supply(a, mem.get(off..off + l));
        }
        w
    }

    fn start(pc: u64, sp: u64, bp: Option<u64>) -> WalkStart {
        WalkStart { pc, sp, bp, lo: 0x10000, hi: 0x10100, in_morestack_stub: false }
    }

    #[test]
    fn walks_a_chain_to_goexit_with_small_windows() {
        // frame records: 0x10020 -> 0x10060 -> 0x100a0 (-> 0: start function, returns to goexit)
        let mem = stack(&[(0x20, 0x10060), (0x28, 0x2010), (0x60, 0x100a0), (0x68, 0x3020), (0xa0, 0), (0xa8, 0x8001)]);
        for window in [16, 32, 64, 0x100] {
            let w = run(start(0x1005, 0x10010, Some(0x10020)), &mem, window);
            let pcs: Vec<u64> = w.frames.iter().map(|f| f.pc).collect();
            assert_eq!(pcs, [0x1005, 0x2010, 0x3020, 0x8001], "window {window}");
            assert_eq!(w.end, Some(StackEnd::Goexit));
        }
    }

    #[test]
    fn stops_on_bad_chains() {
        // Decreasing frame pointer: the return address is kept, the chain stops.
        let mem = stack(&[(0x40, 0x10020), (0x48, 0x2010)]);
        let w = run(start(0x1005, 0x10010, Some(0x10040)), &mem, 0x100);
        assert_eq!(w.frames.len(), 2);
        assert_eq!(w.end, Some(StackEnd::BadFramePointer));
        // Frame pointer outside the stack.
        let w = run(start(0x1005, 0x10010, Some(0x20000)), &mem, 0x100);
        assert_eq!(w.frames.len(), 1);
        assert_eq!(w.end, Some(StackEnd::BadFramePointer));
        // Return address outside the text.
        let mem = stack(&[(0x40, 0x10080), (0x48, 0xdead_0000)]);
        let w = run(start(0x1005, 0x10010, Some(0x10040)), &mem, 0x100);
        assert_eq!(w.end, Some(StackEnd::UnknownPc));
        // Not started: bp 0.
        let w = run(start(0x1000, 0x100f8, Some(0)), &mem, 0x100);
        assert_eq!((w.frames.len(), w.end), (1, Some(StackEnd::ChainEnd)));
    }

    #[test]
    fn syscall_frame_pointer_below_sp_and_morestack_stub() {
        // syscall (Go < 1.23): bp at [sp-16].
        let mem = stack(&[(0x30, 0x10080), (0x80, 0), (0x88, 0x8001)]);
        let w = run(start(0x1005, 0x10040, None), &mem, 0x100);
        assert_eq!(w.frames.iter().map(|f| f.pc).collect::<Vec<_>>(), [0x1005, 0x8001]);
        // morestack stub: return address at [sp], bp is the caller's.
        let mem = stack(&[(0x40, 0x2010), (0x80, 0), (0x88, 0x8001)]);
        let mut s = start(0x1005, 0x10040, Some(0x10080));
        s.in_morestack_stub = true;
        let w = run(s, &mem, 0x100);
        assert_eq!(w.frames.iter().map(|f| f.pc).collect::<Vec<_>>(), [0x1005, 0x2010, 0x8001]);
    }

    #[test]
    fn inlined_calls_expand_into_logical_frames() {
        // 0x1005 <- 0x5010 (h, g inlined into f5000) <- goexit
        let mem = stack(&[(0x20, 0x10060), (0x28, 0x5010), (0x60, 0), (0x68, 0x8001)]);
        let w = run(start(0x1005, 0x10010, Some(0x10020)), &mem, 0x100);
        let names: Vec<(&str, u64, bool)> =
            w.frames.iter().map(|f| (f.location.as_ref().unwrap().function.as_str(), f.pc, f.inlined)).collect();
        assert_eq!(
            names,
            [
                ("f1000", 0x1005, false),
                ("h", 0x5010, true),
                ("g", 0x5010, true),
                ("f5000", 0x5010, false),
                ("f8000", 0x8001, false)
            ]
        );
        assert_eq!(w.end, Some(StackEnd::Goexit));
        // The frame limit counts logical frames.
        let (ws, wl) = Walk::first_window(&start(0x1005, 0x10010, Some(0x10020)), 0x100);
        let mut w = Walk::init(&start(0x1005, 0x10010, Some(0x10020)), Some((ws, mem[(ws - 0x10000) as usize..][..wl].to_vec())));
        assert_eq!(w.advance(&mut FakeSyms, 3, 0x100), None);
        assert_eq!(w.frames.len(), 3);
        assert_eq!(w.end, Some(StackEnd::Truncated));
    }

    #[test]
    fn injected_call_is_not_backed_up() {
        let mem = stack(&[(0x40, 0x10080), (0x48, 0x3000), (0x80, 0), (0x88, 0x8001)]);
        let w = run(start(0x7005, 0x10010, Some(0x10040)), &mem, 0x100);
        let second = w.frames[1].location.as_ref().unwrap();
        assert_eq!(second.line, 0x3000, "the frame after asyncPreempt is looked up at its pc");
        assert_eq!(w.frames[2].location.as_ref().unwrap().line, 0x8000);
    }
}
