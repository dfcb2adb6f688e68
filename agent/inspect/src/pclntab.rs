//! `.gopclntab` reader (Go 1.18+ layout, magics 0xfffffff0 and 0xfffffff1).
//!
//! Header (64-bit): magic u32, 2 pad bytes, minLC u8, ptrSize u8, then 8-byte fields nfunc,
//! nfiles, textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset (all offsets
//! from the start of the header). `textStart` is 0 from Go 1.26 on; the caller then supplies
//! `runtime.firstmoduledata.text`.
//!
//! functab at pclnOffset: nfunc+1 pairs {entryoff u32, funcoff u32} (entryoff relative to
//! textStart, funcoff relative to pclnOffset); the last pair only marks the end of the text.
//! `_func` at pclnOffset+funcoff: entryOff u32, nameOff i32, args, deferreturn, pcsp, pcfile,
//! pcln, npcdata, cuOffset (u32 each), [startLine i32 from 1.20], funcID u8, ...

use crate::error::{InspectError, Result};
use crate::shared::SharedSlice;

pub(crate) const MAGIC_118: u32 = 0xffff_fff0;
pub(crate) const MAGIC_120: u32 = 0xffff_fff1;
const MAGIC_116: u32 = 0xffff_fffa;
const MAGIC_12: u32 = 0xffff_fffb;

/// Longest function or file name read (Go names can be long with generics, but not this long).
const MAX_NAME: usize = 1 << 16;

#[derive(Clone)]
pub(crate) struct Pclntab {
    /// The table's bytes: a range of the executable (see [`SharedSlice`]).
    data: SharedSlice,
    pub vaddr: u64,
    pub magic: u32,
    pub min_lc: u8,
    pub nfunc: usize,
    pub header_text_start: u64,
    pub text_start: u64,
    funcname_off: usize,
    cu_off: usize,
    filetab_off: usize,
    pctab_off: usize,
    pcln_off: usize,
    /// `moduledata.gofunc` (base of the FUNCDATA offsets) and the bytes from there on, when found.
    gofunc: Option<GoFunc>,
}

/// Where the bytes at `moduledata.gofunc` are: inside the table itself (Go 1.26+ places
/// `go:func.*` in `.gopclntab`) or copied from another section (`.rodata` before 1.26).
#[derive(Clone)]
enum GoFuncBytes {
    InTable(usize),
    Elsewhere(SharedSlice),
}

#[derive(Clone)]
struct GoFunc {
    vaddr: u64,
    bytes: GoFuncBytes,
}

/// `PCDATA_InlTreeIndex` and `FUNCDATA_InlTree` (`internal/abi/symtab.go`, same 1.19-1.27).
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// The runtime views the inline tree as `*[1 << 20]inlinedCall`.
const MAX_INL_INDEX: i32 = 1 << 20;
/// Most logical frames one PC expands to (Go's inliner stops far earlier; this only bounds
/// crafted input, e.g. an inline tree whose parents form a cycle).
pub(crate) const MAX_INLINE_DEPTH: usize = 100;

/// One logical frame at a PC: (function name, file, line). `inlined`: not the physical function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogicalFrame {
    pub name: String,
    pub file: String,
    pub line: u32,
    pub inlined: bool,
}

/// One `inlinedCall` record, version-independent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InlinedCall {
    pub name_off: i32,
    pub parent_pc: i32,
}

impl std::fmt::Debug for Pclntab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pclntab")
            .field("vaddr", &format_args!("{:#x}", self.vaddr))
            .field("magic", &format_args!("{:#x}", self.magic))
            .field("nfunc", &self.nfunc)
            .field("text_start", &format_args!("{:#x}", self.text_start))
            .finish()
    }
}

/// Fields of one `_func` record that the lookups need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FuncRec {
    pub entry: u64,
    pub name_off: i32,
    /// Size of the arguments in bytes (`abi.ArgsSizeUnknown` for reflect's stubs).
    pub args: i32,
    /// Offset of the `deferreturn` call from the entry; 0 when the function has no defer.
    pub deferreturn: u32,
    /// Offset of the pc-value table of the frame size (SP delta).
    pub pcsp: u32,
    /// `abi.FuncFlag` bits (top frame, SP write, assembly).
    pub flag: u8,
    pub pcfile: u32,
    pub pcln: u32,
    pub cu_offset: u32,
    pub npcdata: u32,
    pub nfuncdata: u8,
    /// Offset in the table of the `npcdata` pcdata offsets (followed by the funcdata offsets).
    pub pcdata_at: usize,
}

/// Does `b` start with a plausible 64-bit pclntab header?
pub(crate) fn looks_like_header(b: &[u8]) -> bool {
    let Some(m) = rd_u32(b, 0) else { return false };
    (m == MAGIC_118 || m == MAGIC_120) && b.len() >= 72 && b[4] == 0 && b[5] == 0 && matches!(b[6], 1 | 2 | 4) && b[7] == 8
}

impl Pclntab {
    /// [`Pclntab::parse_shared`] of a copy of `data`.
    pub fn parse(data: &[u8], vaddr: u64) -> Result<Pclntab> {
        Pclntab::parse_shared(SharedSlice::owned(data.to_vec()), vaddr)
    }

    /// Parses the header of the table in `data` (the table starts at `data[0]`, mapped at
    /// `vaddr`). The result keeps `data` (a range of the executable, not a copy) for lookups.
    pub fn parse_shared(table: SharedSlice, vaddr: u64) -> Result<Pclntab> {
        let data: &[u8] = &table;
        let magic = rd_u32(data, 0).ok_or_else(|| InspectError::truncated("pclntab header"))?;
        match magic {
            MAGIC_118 | MAGIC_120 => {}
            MAGIC_116 | MAGIC_12 => {
                return Err(InspectError::UnsupportedGoVersion {
                    version: if magic == MAGIC_116 { "go1.16-1.17".into() } else { "go1.2-1.15".into() },
                    reason: "pclntab format predates Go 1.18; goscope supports Go 1.19 and newer".into(),
                });
            }
            _ => {
                return Err(InspectError::malformed(format!("unknown pclntab magic {magic:#x}")));
            }
        }
        if data.len() < 72 {
            return Err(InspectError::truncated("pclntab header"));
        }
        if data[4] != 0 || data[5] != 0 || !matches!(data[6], 1 | 2 | 4) {
            return Err(InspectError::malformed("pclntab header has bad padding or pc quantum"));
        }
        if data[7] != 8 {
            return Err(InspectError::UnsupportedArch {
                arch: format!("{}-byte pointers", data[7]),
                reason: "only 64-bit Go binaries are supported".into(),
            });
        }
        let field = |i: usize| rd_u64(data, 8 + 8 * i).unwrap_or(u64::MAX);
        let len = data.len() as u64;
        let nfunc = field(0);
        let header_text_start = field(2);
        let offs: Vec<u64> = (3..8).map(field).collect();
        for (i, o) in offs.iter().enumerate() {
            if *o >= len {
                return Err(InspectError::truncated(format!("pclntab table #{i} (offset {o:#x})")));
            }
        }
        let pcln_off = offs[4];
        // functab: nfunc+1 pairs of u32.
        let need = nfunc.checked_add(1).and_then(|n| n.checked_mul(8)).and_then(|n| n.checked_add(pcln_off));
        if need.is_none_or(|n| n > len) {
            return Err(InspectError::truncated(format!("pclntab functab ({nfunc} functions)")));
        }
        Ok(Pclntab {
            min_lc: data[6],
            nfunc: nfunc as usize,
            header_text_start,
            text_start: header_text_start,
            funcname_off: offs[0] as usize,
            cu_off: offs[1] as usize,
            filetab_off: offs[2] as usize,
            pctab_off: offs[3] as usize,
            pcln_off: pcln_off as usize,
            gofunc: None,
            data: table,
            vaddr,
            magic,
        })
    }

    /// Size of one `inlinedCall`: Go 1.18/1.19 `{parent i16, funcID u8, _ u8, file, line, func_,
    /// parentPc i32}` = 20; Go 1.20+ `{funcID u8, _ [3]u8, nameOff, parentPc, startLine i32}` = 16.
    fn inl_record_size(&self) -> usize {
        if self.magic == MAGIC_118 { 20 } else { 16 }
    }

    /// Sets `moduledata.gofunc` to `vaddr`; `bytes` (from `vaddr` on) is used when `vaddr` is not
    /// inside the table itself.
    pub fn set_gofunc(&mut self, vaddr: u64, bytes: Option<SharedSlice>) {
        let inside = vaddr.checked_sub(self.vaddr).filter(|o| *o < self.data.len() as u64).map(|o| o as usize);
        self.gofunc = match (inside, bytes) {
            (Some(o), _) => Some(GoFunc { vaddr, bytes: GoFuncBytes::InTable(o) }),
            (None, Some(b)) => Some(GoFunc { vaddr, bytes: GoFuncBytes::Elsewhere(b) }),
            (None, None) => None,
        };
    }

    /// Forgets `moduledata.gofunc` (inline expansion off).
    pub fn clear_gofunc(&mut self) {
        self.gofunc = None;
    }

    /// `moduledata.gofunc`, when known.
    pub fn gofunc_vaddr(&self) -> Option<u64> {
        self.gofunc.as_ref().map(|g| g.vaddr)
    }

    /// The bytes at `moduledata.gofunc + off` on (a FUNCDATA symbol), when `gofunc` is known.
    pub fn funcdata_bytes(&self, off: u32) -> Option<&[u8]> {
        self.gofunc_bytes()?.get(off as usize..)
    }

    fn gofunc_bytes(&self) -> Option<&[u8]> {
        match &self.gofunc.as_ref()?.bytes {
            GoFuncBytes::InTable(o) => self.data.get(*o..),
            GoFuncBytes::Elsewhere(b) => Some(b),
        }
    }

    /// Value of pcdata table `table` of `f` at `pc` (None where the runtime says -1: no table).
    pub fn pcdata(&self, f: &FuncRec, table: u32, pc: u64) -> Option<i32> {
        if table >= f.npcdata {
            return None;
        }
        let off = rd_u32(&self.data, f.pcdata_at.checked_add(4 * table as usize)?)?;
        self.pcvalue(off, f.entry, pc)
    }

    /// Offset from `moduledata.gofunc` of funcdata `i` of `f` (None: absent).
    pub fn funcdata_off(&self, f: &FuncRec, i: u32) -> Option<u32> {
        if i >= u32::from(f.nfuncdata) {
            return None;
        }
        let at = f.pcdata_at.checked_add((f.npcdata as usize).checked_mul(4)?)?.checked_add(4 * i as usize)?;
        rd_u32(&self.data, at).filter(|o| *o != u32::MAX)
    }

    /// Record `ix` of the inline tree at `gofunc + tree_off`.
    pub fn inlined_call(&self, tree_off: u32, ix: i32) -> Option<InlinedCall> {
        if !(0..MAX_INL_INDEX).contains(&ix) {
            return None;
        }
        let b = self.gofunc_bytes()?;
        let size = self.inl_record_size();
        let at = (tree_off as usize).checked_add((ix as usize).checked_mul(size)?)?;
        let rec = b.get(at..at.checked_add(size)?)?;
        let i32_at = |o: usize| rd_u32(rec, o).map(|v| v as i32);
        Some(if self.magic == MAGIC_118 {
            InlinedCall { name_off: i32_at(12)?, parent_pc: i32_at(16)? }
        } else {
            InlinedCall { name_off: i32_at(4)?, parent_pc: i32_at(8)? }
        })
    }

    /// Name at `name_off` in the function name table.
    pub fn name_at(&self, name_off: i32) -> Option<&str> {
        if name_off < 0 {
            return None;
        }
        self.cstr(self.funcname_off.checked_add(name_off as usize)?)
    }

    /// The logical frames at `pc`, innermost first, the way the runtime's `inlineUnwinder`
    /// walks them: the innermost frame has `pc`'s file:line; each outer frame is the
    /// `parentPc` of the inner one's inline-tree record, with the file:line at that pc. The last
    /// frame is the physical function. Also returns the physical function's entry.
    pub fn lookup_frames(&self, pc: u64) -> Option<(Vec<LogicalFrame>, u64)> {
        let i = self.find(pc)?;
        let f = self.func(i)?;
        let phys = self.name(&f)?;
        let tree = self.gofunc.as_ref().and_then(|_| self.funcdata_off(&f, FUNCDATA_INL_TREE));
        let mut frames = Vec::new();
        let mut at = pc;
        loop {
            let (file, line) = self.file_line(&f, at);
            let ix = match tree {
                Some(t) if frames.len() + 1 < MAX_INLINE_DEPTH => {
                    self.pcdata(&f, PCDATA_INL_TREE_INDEX, at).filter(|ix| *ix >= 0).map(|ix| (t, ix))
                }
                _ => None,
            };
            // A record that cannot be read ends the expansion at the physical function, as the
            // runtime's non-strict unwinder does with bad data.
            let call = ix.and_then(|(t, ix)| self.inlined_call(t, ix));
            let Some(call) = call else {
                frames.push(LogicalFrame { name: phys.to_string(), file, line, inlined: false });
                break;
            };
            let name = self.name_at(call.name_off).unwrap_or("?").to_string();
            frames.push(LogicalFrame { name, file, line, inlined: true });
            // parentPc is an offset from the entry (negative only in crafted input).
            at = f.entry.saturating_add(u64::from(call.parent_pc.max(0) as u32));
        }
        Some((frames, f.entry))
    }

    /// File and line of `pc` in `f` ("?", 0 when unknown).
    fn file_line(&self, f: &FuncRec, pc: u64) -> (String, u32) {
        let file = self.pcvalue(f.pcfile, f.entry, pc).and_then(|n| self.file(f.cu_offset, n)).unwrap_or("?").to_string();
        let line = self.pcvalue(f.pcln, f.entry, pc).filter(|l| *l >= 0).map(|l| l as u32).unwrap_or(0);
        (file, line)
    }

    /// Checks a candidate `gofunc`: of (up to) the first `sample` functions with an inline tree,
    /// the records in use at their entries-to-ends must name functions. Returns (checked, good).
    pub fn check_gofunc(&self, sample: usize) -> (usize, usize) {
        let (mut checked, mut good) = (0, 0);
        for i in 0..self.nfunc {
            if checked >= sample {
                break;
            }
            let Some(f) = self.func(i) else { continue };
            let Some(t) = self.funcdata_off(&f, FUNCDATA_INL_TREE) else { continue };
            checked += 1;
            let ok = self.inlined_call(t, 0).is_some_and(|c| {
                c.parent_pc >= 0
                    && self.end(i).is_some_and(|e| f.entry.saturating_add(c.parent_pc as u64) < e)
                    && self.name_at(c.name_off).is_some_and(|n| !n.is_empty() && n.contains('.'))
            });
            good += usize::from(ok);
        }
        (checked, good)
    }

    /// Cheap sanity check for a header found by scanning: at least one function, the first
    /// functab entries ascending, and the first function's name readable.
    pub fn plausible(&self) -> bool {
        if self.nfunc == 0 {
            return false;
        }
        let n = self.nfunc.min(16);
        let mut prev = 0u32;
        for i in 0..=n {
            match self.functab(i) {
                Some((e, _)) if e >= prev => prev = e,
                _ => return false,
            }
        }
        self.func(0).and_then(|f| self.name(&f)).is_some_and(|n| !n.is_empty())
    }

    fn functab(&self, i: usize) -> Option<(u32, u32)> {
        let o = self.pcln_off.checked_add(i.checked_mul(8)?)?;
        Some((rd_u32(&self.data, o)?, rd_u32(&self.data, o + 4)?))
    }

    /// Entry address of function `i` (or the end of text for `i == nfunc`).
    pub fn entry(&self, i: usize) -> Option<u64> {
        let (e, _) = self.functab(i)?;
        self.text_start.checked_add(u64::from(e))
    }

    /// End of function `i`: the next function's entry.
    pub fn end(&self, i: usize) -> Option<u64> {
        self.entry(i + 1)
    }

    pub fn func(&self, i: usize) -> Option<FuncRec> {
        if i >= self.nfunc {
            return None;
        }
        let (entryoff, funcoff) = self.functab(i)?;
        let base = self.pcln_off.checked_add(funcoff as usize)?;
        let r = |k: usize| rd_u32(&self.data, base.checked_add(4 * k)?);
        // 1.18/1.19: funcID, flag, pad, nfuncdata at +36..40; 1.20+ (startLine at +36): +40..44.
        let fixed = if self.magic == MAGIC_118 { 40 } else { 44 };
        Some(FuncRec {
            entry: self.text_start.checked_add(u64::from(entryoff))?,
            name_off: r(1)? as i32,
            args: r(2)? as i32,
            deferreturn: r(3)?,
            pcsp: r(4)?,
            flag: *self.data.get(base.checked_add(fixed - 3)?)?,
            pcfile: r(5)?,
            pcln: r(6)?,
            npcdata: r(7)?,
            cu_offset: r(8)?,
            nfuncdata: *self.data.get(base.checked_add(fixed - 1)?)?,
            pcdata_at: base.checked_add(fixed)?,
        })
    }

    /// Index of the function containing `pc`.
    pub fn find(&self, pc: u64) -> Option<usize> {
        let rel = pc.checked_sub(self.text_start)?;
        if self.nfunc == 0 {
            return None;
        }
        let end = u64::from(self.functab(self.nfunc)?.0);
        if rel >= end {
            return None;
        }
        // Largest i with entryoff(i) <= rel.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if u64::from(self.functab(mid)?.0) <= rel {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        if u64::from(self.functab(lo)?.0) <= rel { Some(lo) } else { None }
    }

    pub fn name(&self, f: &FuncRec) -> Option<&str> {
        if f.name_off < 0 {
            return None;
        }
        self.cstr(self.funcname_off.checked_add(f.name_off as usize)?)
    }

    fn cstr(&self, off: usize) -> Option<&str> {
        let rest = self.data.get(off..)?;
        let rest = &rest[..rest.len().min(MAX_NAME)];
        let n = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..n]).ok()
    }

    /// Value of the pc-value table at `table_off` for `target` in the function starting at `entry`.
    pub fn pcvalue(&self, table_off: u32, entry: u64, target: u64) -> Option<i32> {
        if table_off == 0 {
            return None;
        }
        let start = self.pctab_off.checked_add(table_off as usize)?;
        decode_pcvalue(self.data.get(start..)?, entry, target, self.min_lc)
    }

    /// File name of file number `fileno` of the compilation unit `cu_offset`.
    pub fn file(&self, cu_offset: u32, fileno: i32) -> Option<&str> {
        if fileno < 0 {
            return None;
        }
        let idx = (cu_offset as usize).checked_add(fileno as usize)?;
        let off = rd_u32(&self.data, self.cu_off.checked_add(idx.checked_mul(4)?)?)?;
        if off == u32::MAX {
            return None;
        }
        self.cstr(self.filetab_off.checked_add(off as usize)?)
    }

    /// (function name, file, line, entry) for `pc`.
    pub fn lookup(&self, pc: u64) -> Option<(String, String, u32, u64)> {
        let i = self.find(pc)?;
        let f = self.func(i)?;
        let name = self.name(&f)?.to_string();
        let (file, line) = self.file_line(&f, pc);
        Some((name, file, line, f.entry))
    }

    /// Every function as (name, entry, end).
    ///
    /// Every function of a crafted table can name the same long string (or one with no NUL,
    /// scanned to [`MAX_NAME`] each time); callers copy the names. So the bytes scanned are
    /// bounded by the table size, which real tables (each name stored once) never reach.
    pub fn functions(&self) -> impl Iterator<Item = (&str, u64, u64)> + '_ {
        self.indexed_functions().map(|(_, name, entry, end)| (name, entry, end))
    }

    /// [`Pclntab::functions`] with each function's index.
    pub fn indexed_functions(&self) -> impl Iterator<Item = (usize, &str, u64, u64)> + '_ {
        let mut budget = self.data.len().saturating_mul(2).saturating_add(1 << 20);
        (0..self.nfunc)
            .map_while(move |i| {
                let f = self.func(i);
                let name = f.as_ref().and_then(|f| self.name(f));
                budget = budget.checked_sub(name.map_or(MAX_NAME, |n| n.len() + 1))?;
                Some(name.zip(f).and_then(|(n, f)| Some((i, n, f.entry, self.end(i)?))))
            })
            .flatten()
    }
}

/// Go's pc-value encoding: starting from `val = -1, pc = entry`, pairs of
/// (zig-zag uvarint value delta, uvarint pc delta × quantum); a zero value delta other than the
/// first ends the table. Returns the value in force at `target`.
pub(crate) fn decode_pcvalue(p: &[u8], entry: u64, target: u64, quantum: u8) -> Option<i32> {
    let mut pos = 0usize;
    let mut val: i32 = -1;
    let mut pc = entry;
    let mut first = true;
    loop {
        let (uvdelta, n) = varint32(p.get(pos..)?)?;
        if uvdelta == 0 && !first {
            return None;
        }
        pos += n;
        let delta = (-((uvdelta & 1) as i32)) ^ ((uvdelta >> 1) as i32);
        val = val.wrapping_add(delta);
        let (pcdelta, n) = varint32(p.get(pos..)?)?;
        pos += n;
        pc = pc.checked_add(u64::from(pcdelta) * u64::from(quantum))?;
        if target < pc {
            return Some(val);
        }
        first = false;
    }
}

fn varint32(b: &[u8]) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    let mut shift = 0u32;
    for (i, &byte) in b.iter().enumerate().take(5) {
        v |= u32::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
        shift += 7;
    }
    None
}

pub(crate) fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    crate::elf::le_u32(b, off)
}

pub(crate) fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    crate::elf::le_u64(b, off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zz(v: i32) -> u32 {
        ((v << 1) ^ (v >> 31)) as u32
    }

    fn uv(mut v: u32, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Encodes (value, pc-length) runs the way cmd/internal/obj does.
    fn encode(runs: &[(i32, u32)], quantum: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = -1;
        for &(v, len) in runs {
            uv(zz(v - prev), &mut out);
            uv(len / quantum, &mut out);
            prev = v;
        }
        out.push(0);
        out
    }

    #[test]
    fn pcvalue_basic() {
        // line 10 for [0,4), line 12 for [4,300), line 11 for [300,310)
        let t = encode(&[(10, 4), (12, 296), (11, 10)], 1);
        let e = 0x401000;
        assert_eq!(decode_pcvalue(&t, e, e, 1), Some(10));
        assert_eq!(decode_pcvalue(&t, e, e + 3, 1), Some(10));
        assert_eq!(decode_pcvalue(&t, e, e + 4, 1), Some(12));
        assert_eq!(decode_pcvalue(&t, e, e + 299, 1), Some(12));
        assert_eq!(decode_pcvalue(&t, e, e + 300, 1), Some(11));
        assert_eq!(decode_pcvalue(&t, e, e + 309, 1), Some(11));
        assert_eq!(decode_pcvalue(&t, e, e + 310, 1), None);
    }

    #[test]
    fn pcvalue_first_zero_delta_and_quantum() {
        // First value -1 (delta 0 allowed only first), then 0, with arm64 quantum 4.
        let t = encode(&[(-1, 8), (0, 16)], 4);
        assert_eq!(decode_pcvalue(&t, 0x1000, 0x1004, 4), Some(-1));
        assert_eq!(decode_pcvalue(&t, 0x1000, 0x1008, 4), Some(0));
        assert_eq!(decode_pcvalue(&t, 0x1000, 0x1017, 4), Some(0));
        assert_eq!(decode_pcvalue(&t, 0x1000, 0x1018, 4), None);
    }

    #[test]
    fn pcvalue_negative_and_truncated() {
        let t = encode(&[(100, 2), (-5, 2), (70000, 200)], 1);
        assert_eq!(decode_pcvalue(&t, 0, 2, 1), Some(-5));
        assert_eq!(decode_pcvalue(&t, 0, 201, 1), Some(70000));
        for cut in 0..t.len() - 1 {
            // Never panics; a cut table either still answers early pcs or returns None.
            let _ = decode_pcvalue(&t[..cut], 0, 201, 1);
        }
        assert_eq!(decode_pcvalue(&[], 0, 0, 1), None);
        assert_eq!(decode_pcvalue(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0, 0, 1), None);
    }

    #[test]
    fn header_rejects_garbage() {
        assert!(Pclntab::parse(&[0u8; 10], 0).is_err());
        let mut h = vec![0u8; 72];
        h[..4].copy_from_slice(&MAGIC_120.to_le_bytes());
        h[6] = 1;
        h[7] = 8;
        // nfunc huge
        h[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Pclntab::parse(&h, 0).is_err());
        h[8..16].copy_from_slice(&0u64.to_le_bytes());
        for i in 3..8 {
            h[8 + 8 * i..16 + 8 * i].copy_from_slice(&64u64.to_le_bytes());
        }
        let p = Pclntab::parse(&h, 0).unwrap();
        assert_eq!(p.find(0x1000), None);
        assert_eq!(p.functions().count(), 0);
        h[..4].copy_from_slice(&MAGIC_116.to_le_bytes());
        assert!(matches!(Pclntab::parse(&h, 0), Err(InspectError::UnsupportedGoVersion { .. })));
    }
}
