//! Which words of a goroutine's stack hold live pointers, as the runtime's garbage collector
//! decides it (`scanstack` / `scanframeworker` in `mgcmark.go`, the unwinder in `traceback.go`,
//! Go 1.19-1.27, amd64): unwind from the saved PC and SP with each function's frame size; in
//! each frame, the locals' bitmap ends at `varp` (below the return address and the saved frame
//! pointer) and the arguments' bitmap starts at `argp` (above the return address); a stack
//! object (an address-taken variable) counts only when a pointer found so far points into it,
//! and is then scanned whole.
//!
//! The defer records linked from `g._defer` are scanned apart from the maps, as the runtime
//! does: their `fn` and `link` words.
//!
//! Everything the maps do not decide is scanned conservatively (every word may be a pointer),
//! as the runtime does for asyncPreempt's frame and the frame it interrupted: a frame without a
//! usable map, a frame after an injected call or of reflect's stubs, a frame with a `defer` when
//! the defer chain leaves the stack (a heap record, whose link may lead back into it, is not read
//! here), and the rest of the stack once the unwinding cannot go on. Those frames are counted.
use std::sync::Arc;

use goscope_inspect::{FrameKind, FrameMaps, PointerBitmap};

/// Where the runtime would start scanning a stopped goroutine's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackContext {
    /// Its g struct, to check that it did not run while its stack was read.
    pub g_addr: u64,
    /// Saved PC (`g.sched.pc`).
    pub pc: u64,
    /// Saved SP (`g.sched.sp`).
    pub sp: u64,
    /// Words of the g struct that may point into the stack, which the runtime follows into stack
    /// objects: `sched.ctxt`, `_panic`, `_defer`.
    pub into_stack: [u64; 3],
    /// Offsets of `fn` and `link` in `runtime._defer` (None: unknown, frames with a defer are
    /// scanned conservatively).
    pub defer_fields: Option<[u64; 2]>,
}

/// The pointer words of a stack, from the stack maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackPointers {
    /// One entry per word read: whether it may hold a pointer.
    pub mask: Vec<bool>,
    /// Frames scanned by their maps.
    pub precise_frames: u64,
    /// Frames (and the rest of a stack that could not be unwound, counted as one) scanned
    /// conservatively.
    pub conservative_frames: u64,
}

/// The runtime's maps of the frame at a runtime PC.
pub(crate) trait FrameMapSource {
    fn frame_maps(&mut self, pc: u64) -> Option<Arc<FrameMaps>>;
}

/// Marks of one stack scan over `words`, read from `base` up.
struct Scan<'w> {
    words: &'w [u64],
    base: u64,
    end: u64,
    /// `[lo, hi)` of the whole stack: words pointing there lead to stack objects.
    lo: u64,
    mask: Vec<bool>,
    /// `[start, end)` of the stack objects of the frames scanned precisely, not yet scanned.
    objects: Vec<(u64, u64)>,
    out: StackPointers,
}

impl Scan<'_> {
    fn index(&self, addr: u64) -> Option<usize> {
        let off = addr.checked_sub(self.base)?;
        (addr < self.end && off.is_multiple_of(8)).then_some((off / 8) as usize)
    }

    fn word(&self, addr: u64) -> Option<u64> {
        self.words.get(self.index(addr)?).copied()
    }

    fn mark(&mut self, addr: u64) {
        if let Some(i) = self.index(addr) {
            self.mask[i] = true;
        }
    }

    fn mark_range(&mut self, from: u64, to: u64) {
        let from = from.max(self.base).next_multiple_of(8);
        let to = to.min(self.end);
        for addr in (from..to).step_by(8) {
            self.mark(addr);
        }
    }

    fn mark_bitmap(&mut self, start: u64, bitmap: &PointerBitmap) {
        for i in (0..bitmap.words()).filter(|&i| bitmap.is_pointer(i)) {
            self.mark(start.wrapping_add(8 * u64::from(i)));
        }
    }

    /// Scans one frame `[sp, fp)` (arguments from `fp` on); false when it had to be
    /// conservative.
    fn frame(&mut self, m: &FrameMaps, sp: u64, fp: u64, conservative: bool) -> bool {
        // amd64: the return address is at fp-8, the saved frame pointer below it if the frame
        // has any size (`framepointer_enabled`).
        let varp = if fp - 8 > sp { fp - 16 } else { fp - 8 };
        let argp = fp;
        let empty = PointerBitmap::default();
        let locals = if varp > sp { m.locals.as_ref() } else { Some(&empty) };
        let args = match m.args_size {
            Some(0) => Some(&empty),
            _ => m.args.as_ref(),
        };
        let maps = locals.zip(args).zip(m.objects.as_ref());
        let (Some(((locals, args), objects)), false) = (maps, conservative) else {
            self.mark_range(sp, varp);
            self.mark_range(argp, argp.saturating_add(u64::from(m.args_size.unwrap_or(0))));
            self.out.conservative_frames += 1;
            return false;
        };
        self.mark_bitmap(varp.wrapping_sub(8 * u64::from(locals.words())), locals);
        self.mark_bitmap(argp, args);
        for o in objects {
            let start = if o.offset < 0 { varp } else { argp }.wrapping_add_signed(i64::from(o.offset));
            // Not allocated in the frame yet.
            if start >= sp {
                self.objects.push((start, start.saturating_add(u64::from(o.size))));
            }
        }
        self.out.precise_frames += 1;
        true
    }

    /// Marks the `fn` and `link` words of the defer records chained from `first`; false when the
    /// chain leaves the stack or cannot be followed (then not every record was seen).
    fn defer_chain(&mut self, first: u64, [fn_at, link_at]: [u64; 2]) -> bool {
        let mut d = first;
        for _ in 0..=self.words.len() {
            if d == 0 {
                return true;
            }
            if d < self.base || d >= self.end {
                return false;
            }
            self.mark(d.wrapping_add(fn_at));
            self.mark(d.wrapping_add(link_at));
            let Some(next) = self.word(d.wrapping_add(link_at)) else { return false };
            d = next;
        }
        false
    }

    /// Scans the stack objects that the marked words (and `extra`) point into, and those that
    /// they point into, to a fixpoint.
    fn stack_objects(&mut self, extra: &[u64]) {
        let into_stack = |v: u64, lo: u64, end: u64| v >= lo && v < end;
        let (lo, end) = (self.lo, self.end);
        let mut pending: Vec<u64> = extra.iter().copied().filter(|&v| into_stack(v, lo, end)).collect();
        pending.extend(self.words.iter().zip(&self.mask).filter(|(w, m)| **m && into_stack(**w, lo, end)).map(|(w, _)| *w));
        self.objects.sort_unstable();
        let mut scanned = vec![false; self.objects.len()];
        while let Some(p) = pending.pop() {
            let Some(k) = self.objects.partition_point(|o| o.0 <= p).checked_sub(1) else { continue };
            let (start, stop) = self.objects[k];
            if p >= stop || scanned[k] {
                continue;
            }
            scanned[k] = true;
            self.mark_range(start, stop);
            for addr in (start.next_multiple_of(8)..stop.min(end)).step_by(8) {
                if let Some(w) = self.word(addr).filter(|&w| into_stack(w, lo, end)) {
                    pending.push(w);
                }
            }
        }
    }
}

/// The pointer words of the stack whose words from `base` up are `words`, whose whole extent is
/// `[lo, base + 8 * words.len())`, starting from the saved context `ctx`. Each frame found by
/// unwinding is scanned by its maps where they decide, conservatively otherwise.
pub(crate) fn stack_pointers(
    words: &[u64],
    base: u64,
    lo: u64,
    ctx: &StackContext,
    maps: &mut impl FrameMapSource,
) -> StackPointers {
    let end = base.saturating_add(8 * words.len() as u64);
    let mut s = Scan { words, base, end, lo, mask: vec![false; words.len()], objects: Vec::new(), out: StackPointers::default() };
    let defers_seen = ctx.defer_fields.is_some_and(|f| s.defer_chain(ctx.into_stack[2], f));
    let (mut pc, mut sp) = (ctx.pc, ctx.sp);
    let mut innermost = true;
    // The runtime scans the frame an injected call interrupted conservatively; the same for the
    // caller of a reflect stub, whose argument area (in that caller's frame) has no static map.
    let mut after_special = false;
    loop {
        let maps = maps.frame_maps(pc);
        let Some(m) = maps.filter(|_| sp >= base && sp.is_multiple_of(8)) else {
            s.mark_range(sp, end);
            s.out.conservative_frames += 1;
            break;
        };
        let fp = sp.saturating_add(u64::from(m.frame_size)).saturating_add(8);
        // A function that writes SP can only be unwound when it is the innermost frame (it then
        // stopped at its entry's stack check, as the runtime assumes).
        if fp > end || (m.sp_write && !innermost && !m.top_frame) {
            s.mark_range(sp, end);
            s.out.conservative_frames += 1;
            break;
        }
        let conservative = after_special || m.kind != FrameKind::Normal || (m.has_defer && !defers_seen);
        s.frame(&m, sp, fp, conservative);
        after_special = m.kind != FrameKind::Normal;
        let lr = if m.top_frame { 0 } else { s.word(fp - 8).unwrap_or(0) };
        if lr == 0 {
            break;
        }
        (pc, sp, innermost) = (lr, fp, false);
    }
    s.stack_objects(&ctx.into_stack);
    s.out.mask = s.mask;
    s.out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use goscope_inspect::StackObject;

    use super::*;

    struct Maps(HashMap<u64, Arc<FrameMaps>>);
    impl FrameMapSource for Maps {
        fn frame_maps(&mut self, pc: u64) -> Option<Arc<FrameMaps>> {
            self.0.get(&(pc & !0xff)).cloned()
        }
    }

    fn maps(frame_size: u32, locals: &[u8], locals_words: u32, args: u32, objects: Vec<StackObject>) -> FrameMaps {
        FrameMaps {
            entry: 0,
            frame_size,
            top_frame: false,
            sp_write: false,
            kind: FrameKind::Normal,
            has_defer: false,
            args_size: Some(8 * args),
            locals: Some(PointerBitmap::new(locals_words, locals)),
            args: Some(PointerBitmap::new(args, &[0xff])),
            objects: Some(objects),
        }
    }

    const BASE: u64 = 0x10000;
    const WORDS: usize = 32;

    fn ctx(pc: u64) -> StackContext {
        StackContext { g_addr: 0, pc, sp: BASE, into_stack: [0; 3], defer_fields: Some([24, 32]) }
    }

    /// Two frames: f (pc 0x1000) with 32 bytes of frame, called by main (pc 0x2000) with 48;
    /// main returns to goexit (0x3000, top frame).
    fn two_frames(main_locals: &[u8], objects: Vec<StackObject>) -> (Vec<u64>, Maps) {
        let mut words = vec![0u64; WORDS];
        // f: sp = BASE, fp = BASE+40: locals [BASE, BASE+24), saved bp at +24, return at +32.
        words[3] = BASE + 0x100;
        words[4] = 0x2010;
        // main: sp = BASE+40, fp = BASE+40+56 = BASE+96: locals [BASE+40, BASE+80), bp at +80,
        // return at +88.
        words[11] = 0x3001;
        let mut m = HashMap::new();
        m.insert(0x1000, Arc::new(maps(32, &[0b001], 3, 1, Vec::new())));
        m.insert(0x2000, Arc::new(maps(48, main_locals, 5, 0, objects)));
        let mut goexit = maps(0, &[], 0, 0, Vec::new());
        goexit.top_frame = true;
        m.insert(0x3000, Arc::new(goexit));
        (words, Maps(m))
    }

    fn marked(p: &StackPointers) -> Vec<usize> {
        p.mask.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i).collect()
    }

    #[test]
    fn only_live_slots_of_each_frame_are_pointers() {
        // main's locals: 5 words ending at varp = BASE+80, i.e. words 5..10; bits 1 and 4 live.
        let (words, mut m) = two_frames(&[0b10010], Vec::new());
        let p = stack_pointers(&words, BASE, BASE, &ctx(0x1005), &mut m);
        // f: locals word 0 (bit 0 of a 3-word map ending at word 3); f's args: word 5 (= main's
        // sp, 1 word); main: words 6 and 9.
        assert_eq!(marked(&p), [0, 5, 6, 9]);
        assert_eq!((p.precise_frames, p.conservative_frames), (3, 0));
    }

    #[test]
    fn words_below_the_saved_sp_are_not_pointers() {
        // The whole stack read from 4 words below SP (a goroutine in a system call): stale words
        // there hold nothing live.
        let (words, mut m) = two_frames(&[0b10010], Vec::new());
        let below = [BASE + 0x100, 0xc000_0000, 0x2010, 7];
        let all: Vec<u64> = below.iter().copied().chain(words).collect();
        let p = stack_pointers(&all, BASE - 32, BASE - 32, &ctx(0x1005), &mut m);
        assert_eq!(marked(&p), [4, 9, 10, 13]);
    }

    #[test]
    fn frames_without_maps_and_special_frames_are_conservative() {
        let (words, mut m) = two_frames(&[0], Vec::new());
        // No maps at main's pc: main's frame and everything above it are scanned whole.
        m.0.remove(&0x2000);
        let p = stack_pointers(&words, BASE, BASE, &ctx(0x1005), &mut m);
        assert_eq!(marked(&p), [0, 5, 6, 7, 8, 9, 10, 11, 12, 13].into_iter().chain(14..WORDS).collect::<Vec<_>>());
        assert_eq!((p.precise_frames, p.conservative_frames), (1, 1));
        // An injected call (asyncPreempt) in f: f and the frame it interrupted are conservative.
        let (words, mut m) = two_frames(&[0], Vec::new());
        let mut f = (*m.0[&0x1000]).clone();
        f.kind = FrameKind::InjectedCall;
        m.0.insert(0x1000, Arc::new(f));
        let p = stack_pointers(&words, BASE, BASE, &ctx(0x1005), &mut m);
        assert_eq!(marked(&p), [0, 1, 2, 5, 6, 7, 8, 9]);
        assert_eq!((p.precise_frames, p.conservative_frames), (1, 2));
        // A frame with a defer whose record is on the heap is conservative, the others stay
        // precise.
        let (words, mut m) = two_frames(&[0], Vec::new());
        let mut main = (*m.0[&0x2000]).clone();
        main.has_defer = true;
        m.0.insert(0x2000, Arc::new(main));
        let mut c = ctx(0x1005);
        c.into_stack[2] = 0xc000_1000;
        let p = stack_pointers(&words, BASE, BASE, &c, &mut m);
        assert_eq!(marked(&p), [0, 5, 6, 7, 8, 9]);
        // Without defer records, or with records all in the stack, it stays precise; the
        // records' fn and link words count (fn at +24, link at +32 of a record at word 5).
        c.into_stack[2] = 0;
        let p = stack_pointers(&words, BASE, BASE, &c, &mut m);
        assert_eq!(marked(&p), [0, 5]);
        let mut words = words;
        words[9] = 0xc000_2000; // link: a heap record further down the chain
        c.into_stack[2] = BASE + 40;
        let p = stack_pointers(&words, BASE, BASE, &c, &mut m);
        assert_eq!(marked(&p), [0, 5, 6, 7, 8, 9], "the chain leaves the stack: conservative");
        words[9] = 0;
        let p = stack_pointers(&words, BASE, BASE, &c, &mut m);
        assert_eq!(marked(&p), [0, 5, 8, 9]);
    }

    #[test]
    fn stack_objects_count_only_when_pointed_to() {
        // A 16-byte object at varp-40 = BASE+40 (words 5, 6), and one at BASE+56 (words 7, 8).
        let objects = vec![StackObject { offset: -40, size: 16 }, StackObject { offset: -24, size: 16 }];
        let (mut words, mut m) = two_frames(&[0b00000], objects.clone());
        words[7] = 0xdead_0000; // a pointer inside the second object
        let p = stack_pointers(&words, BASE, BASE, &ctx(0x1005), &mut m);
        // f's locals word 0 holds 0: nothing points into the objects; f's args word 5 is a slot.
        assert_eq!(marked(&p), [0, 5]);
        // f's live local points into the second object: it is scanned whole.
        let (mut words, mut m) = two_frames(&[0b00000], objects);
        words[0] = BASE + 60;
        words[7] = 0xdead_0000;
        let p = stack_pointers(&words, BASE, BASE, &ctx(0x1005), &mut m);
        assert_eq!(marked(&p), [0, 5, 7, 8]);
        // A word of the g struct (e.g. _panic) pointing at the first object.
        let (words, mut m) = two_frames(&[0], vec![StackObject { offset: -40, size: 16 }]);
        let mut c = ctx(0x1005);
        c.into_stack[1] = BASE + 40;
        let p = stack_pointers(&words, BASE, BASE, &c, &mut m);
        assert_eq!(marked(&p), [0, 5, 6]);
    }

    #[test]
    fn unknown_pc_and_bad_frames_fall_back_to_the_whole_rest() {
        let (words, mut m) = two_frames(&[0], Vec::new());
        let p = stack_pointers(&words, BASE, BASE, &ctx(0x9000), &mut m);
        assert!(p.mask.iter().all(|m| *m));
        assert_eq!((p.precise_frames, p.conservative_frames), (0, 1));
        // A frame larger than the stack read.
        let (words, mut m) = two_frames(&[0], Vec::new());
        let mut f = (*m.0[&0x1000]).clone();
        f.frame_size = 4096;
        m.0.insert(0x1000, Arc::new(f));
        let p = stack_pointers(&words, BASE, BASE, &ctx(0x1005), &mut m);
        assert!(p.mask.iter().all(|m| *m));
        // A return address of 0 ends the walk (nothing above is scanned).
        let (mut words, mut m) = two_frames(&[0], Vec::new());
        words[11] = 0;
        let p = stack_pointers(&words, BASE, BASE, &ctx(0x1005), &mut m);
        assert_eq!(marked(&p), [0, 5]);
    }
}
