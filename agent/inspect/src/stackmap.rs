//! The runtime's stack maps: for a PC, what its garbage collector knows about the frame there —
//! the frame size (the `pcsp` table), which words of the locals and of the arguments hold live
//! pointers (`FUNCDATA_LocalsPointerMaps` / `FUNCDATA_ArgsPointerMaps`, indexed by
//! `PCDATA_StackMapIndex`), and the address-taken variables (`FUNCDATA_StackObjects`).
//!
//! Decoded the way `runtime.(*stkframe).getStackMap` does (go1.19 `mgcmark.go`/`stack.go` to
//! go1.27 `stkframe.go`): the index is looked up at `pc - 1` (the call instruction) unless `pc`
//! is the function's entry, and -1 ("no index") means 0. Where the runtime would throw
//! ("missing stackmap", "bad symbol table") the map is absent here, and callers scan that part
//! conservatively.
use crate::pclntab::{FuncRec, Pclntab, rd_u32, rd_u64};
use crate::runtime::stack_maps::{
    ARGS_SIZE_UNKNOWN, FUNC_FLAG_SP_WRITE, FUNC_FLAG_TOP_FRAME, FUNCDATA_ARGS_POINTER_MAPS, FUNCDATA_LOCALS_POINTER_MAPS,
    FUNCDATA_STACK_OBJECTS, INJECTED_CALLS, PCDATA_STACK_MAP_INDEX, REFLECT_STUBS,
};

/// Record size of a stack object ([`crate::runtime::stack_maps::STACK_OBJECT_RECORD`]).
const STACK_OBJECT_RECORD: usize = 16;
/// Most bits of one bitmap accepted (a frame of 8 MiB of words); more is crafted input.
const MAX_BITS: i32 = 1 << 20;
/// Most stack objects of one function accepted.
const MAX_STACK_OBJECTS: u64 = 1 << 16;

/// A runtime `bitvector`: one bit per 8-byte word, least significant bit first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PointerBitmap {
    words: u32,
    bytes: Vec<u8>,
}

impl PointerBitmap {
    /// A bitmap of `words` words from the runtime's bytes (missing bytes read as zero).
    pub fn new(words: u32, bytes: &[u8]) -> Self {
        let len = (words as usize).div_ceil(8).min(bytes.len());
        PointerBitmap { words, bytes: bytes[..len].to_vec() }
    }

    /// Words the bitmap covers.
    pub fn words(&self) -> u32 {
        self.words
    }

    /// Whether word `i` holds a live pointer.
    pub fn is_pointer(&self, i: u32) -> bool {
        i < self.words && self.bytes.get((i / 8) as usize).is_some_and(|b| b >> (i % 8) & 1 != 0)
    }
}

/// What kind of frame the runtime's scan treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// An ordinary frame: its maps say everything.
    Normal,
    /// A call the runtime injects (asyncPreempt, debugCallV2, sigpanic): the frame that called it
    /// stopped at an instruction that is not a call, where no stack map is in force.
    InjectedCall,
    /// reflect.makeFuncStub / reflect.methodValueCall: the argument map is dynamic.
    ReflectStub,
}

/// A variable whose address is taken, in one frame: scanned when something points into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackObject {
    /// Offset from the frame's `varp` (negative) or `argp` (non-negative).
    pub offset: i32,
    /// Size in bytes.
    pub size: u32,
}

/// The runtime's knowledge of the frame of the function containing a PC, at that PC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameMaps {
    /// Entry of the function (link-time).
    pub entry: u64,
    /// Bytes the function has pushed below its return address at this PC (`pcsp`).
    pub frame_size: u32,
    /// The function is the bottom of its stack (`runtime.goexit`): no caller.
    pub top_frame: bool,
    /// The function writes SP in a way the frame size does not describe.
    pub sp_write: bool,
    /// Special handling by the runtime's stack scan.
    pub kind: FrameKind,
    /// The function has a `defer` (its frame may hold a defer record the runtime scans apart).
    pub has_defer: bool,
    /// Size of the argument area in bytes; None for reflect's stubs (dynamic).
    pub args_size: Option<u32>,
    /// The live pointer words of the locals, ending at `varp`; None: no usable map.
    pub locals: Option<PointerBitmap>,
    /// The live pointer words of the arguments, from `argp` on; None: no usable map.
    pub args: Option<PointerBitmap>,
    /// The stack objects; None: the table could not be read.
    pub objects: Option<Vec<StackObject>>,
}

/// The maps of the frame at `pc` (link-time): the innermost frame's resume PC or a return
/// address. None when `pc` is in no function or the function has no frame information (an
/// external function; the runtime stops unwinding there).
pub(crate) fn frame_maps(pcln: &Pclntab, pc: u64) -> Option<FrameMaps> {
    let f = pcln.func(pcln.find(pc)?)?;
    let frame_size = pcln.pcvalue(f.pcsp, f.entry, pc).and_then(|v| u32::try_from(v).ok())?;
    let name = pcln.name(&f).unwrap_or("");
    let kind = if INJECTED_CALLS.contains(&name) {
        FrameKind::InjectedCall
    } else if REFLECT_STUBS.contains(&name) {
        FrameKind::ReflectStub
    } else {
        FrameKind::Normal
    };
    let index = if pc == f.entry { -1 } else { pcln.pcdata(&f, PCDATA_STACK_MAP_INDEX, pc - 1).unwrap_or(-1) };
    let index = if index == -1 { 0 } else { index };
    let args_size = (f.args != ARGS_SIZE_UNKNOWN).then(|| u32::try_from(f.args).ok()).flatten();
    let args = match args_size {
        Some(0) => Some(PointerBitmap::default()),
        Some(_) => args_map(pcln, &f, index),
        None => None,
    };
    Some(FrameMaps {
        entry: f.entry,
        frame_size,
        top_frame: f.flag & FUNC_FLAG_TOP_FRAME != 0,
        sp_write: f.flag & FUNC_FLAG_SP_WRITE != 0,
        kind,
        has_defer: f.deferreturn != 0,
        args_size,
        locals: locals_map(pcln, &f, index),
        args,
        objects: stack_objects(pcln, &f),
    })
}

/// The `(n, nbit)` header of the stackmap at funcdata `which` of `f`, and its bytes.
fn stackmap<'p>(pcln: &'p Pclntab, f: &FuncRec, which: u32) -> Option<(i32, i32, &'p [u8])> {
    let bytes = pcln.funcdata_bytes(pcln.funcdata_off(f, which)?)?;
    let n = rd_u32(bytes, 0)? as i32;
    let nbit = rd_u32(bytes, 4)? as i32;
    (n > 0 && (0..=MAX_BITS).contains(&nbit)).then_some((n, nbit, bytes))
}

/// Bitmap `index` of a stackmap (`stackmapdata`).
fn bitmap_at(n: i32, nbit: i32, bytes: &[u8], index: i32) -> Option<PointerBitmap> {
    if !(0..n).contains(&index) {
        return None;
    }
    let per = (nbit as usize).div_ceil(8);
    let at = 8usize.checked_add((index as usize).checked_mul(per)?)?;
    let data = bytes.get(at..at.checked_add(per)?)?;
    Some(PointerBitmap::new(nbit as u32, data))
}

fn locals_map(pcln: &Pclntab, f: &FuncRec, index: i32) -> Option<PointerBitmap> {
    let (n, nbit, bytes) = stackmap(pcln, f, FUNCDATA_LOCALS_POINTER_MAPS)?;
    // No pointer words at all: the runtime does not even look at the index.
    if nbit == 0 {
        return Some(PointerBitmap::default());
    }
    bitmap_at(n, nbit, bytes, index)
}

fn args_map(pcln: &Pclntab, f: &FuncRec, index: i32) -> Option<PointerBitmap> {
    let (n, nbit, bytes) = stackmap(pcln, f, FUNCDATA_ARGS_POINTER_MAPS)?;
    if !(0..n).contains(&index) {
        return None;
    }
    if nbit == 0 {
        return Some(PointerBitmap::default());
    }
    bitmap_at(n, nbit, bytes, index)
}

/// The stack objects of `f`: none without the funcdata, None when it cannot be read.
fn stack_objects(pcln: &Pclntab, f: &FuncRec) -> Option<Vec<StackObject>> {
    let Some(off) = pcln.funcdata_off(f, FUNCDATA_STACK_OBJECTS) else { return Some(Vec::new()) };
    decode_stack_objects(pcln.funcdata_bytes(off)?)
}

/// `n uintptr`, then `n` records `{off int32, size int32, ptrdata int32, gcdataoff uint32}`.
pub(crate) fn decode_stack_objects(bytes: &[u8]) -> Option<Vec<StackObject>> {
    let n = rd_u64(bytes, 0)?;
    if n > MAX_STACK_OBJECTS || n as usize * STACK_OBJECT_RECORD > bytes.len().saturating_sub(8) {
        return None;
    }
    (0..n as usize)
        .map(|i| {
            let at = 8 + i * STACK_OBJECT_RECORD;
            let offset = rd_u32(bytes, at)? as i32;
            let size = u32::try_from(rd_u32(bytes, at + 4)? as i32).ok()?;
            Some(StackObject { offset, size })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stackmap_bytes(n: i32, nbit: i32, maps: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(n.to_le_bytes());
        v.extend(nbit.to_le_bytes());
        for m in maps {
            v.extend(*m);
        }
        v
    }

    #[test]
    fn bitmaps_are_indexed_per_byte_boundary() {
        // 10 bits => 2 bytes per bitmap.
        let b = stackmap_bytes(3, 10, &[&[0b0000_0001, 0b10], &[0b1000_0000, 0], &[0, 0b01]]);
        let m0 = bitmap_at(3, 10, &b, 0).unwrap();
        assert_eq!((m0.words(), m0.is_pointer(0), m0.is_pointer(1), m0.is_pointer(9)), (10, true, false, true));
        let m1 = bitmap_at(3, 10, &b, 1).unwrap();
        assert!(m1.is_pointer(7) && !m1.is_pointer(0) && !m1.is_pointer(9));
        let m2 = bitmap_at(3, 10, &b, 2).unwrap();
        assert!(m2.is_pointer(8) && !m2.is_pointer(9));
        assert!(!m2.is_pointer(10), "past the end is never a pointer");
        assert_eq!(bitmap_at(3, 10, &b, 3), None, "index out of range: no map, as the runtime would throw");
        assert_eq!(bitmap_at(3, 10, &b, -1), None);
        assert_eq!(bitmap_at(3, 10, &b[..11], 2), None, "truncated");
    }

    #[test]
    fn stack_objects_decode_and_reject_garbage() {
        let mut b = 2u64.to_le_bytes().to_vec();
        for (off, size) in [(-48i32, 24i32), (8, 16)] {
            b.extend(off.to_le_bytes());
            b.extend(size.to_le_bytes());
            b.extend(8i32.to_le_bytes());
            b.extend(0u32.to_le_bytes());
        }
        assert_eq!(
            decode_stack_objects(&b),
            Some(vec![StackObject { offset: -48, size: 24 }, StackObject { offset: 8, size: 16 }])
        );
        assert_eq!(decode_stack_objects(&b[..b.len() - 1]), None);
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend([0u8; 64]);
        assert_eq!(decode_stack_objects(&huge), None);
        let mut negative = 1u64.to_le_bytes().to_vec();
        negative.extend((-8i32).to_le_bytes());
        negative.extend((-1i32).to_le_bytes());
        negative.extend([0u8; 8]);
        assert_eq!(decode_stack_objects(&negative), None);
    }
}
