//! Go binary analysis for goscope.
//!
//! [`GoBinary::open`] reads an ELF executable built by Go 1.19 or newer and computes, once:
//! build info (`.go.buildinfo`, `.note.go.buildid`), a function table (ELF `.symtab` and/or
//! `.gopclntab`, so stripped binaries work), the byte offsets of the runtime structs the eBPF side
//! reads ([`RuntimeLayout`], from DWARF or a checked-in per-version table), the goroutine
//! wait-reason names ([`WaitReasonTable`]), and the uprobe sites ([`ProbeSite`]) for goroutine
//! creation, parking, readying and exit.
//!
//! Input is untrusted: every read is bounds-checked, allocations are bounded by the input size,
//! and malformed input yields an [`InspectError`], never a panic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod analyse;
mod buildinfo;
mod dwarf;
mod elf;
mod error;
/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing;
mod layout;
mod pclntab;
mod probes;
pub mod runtime;
mod shared;
mod stackmap;
mod symtab;
mod waitreason;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

pub use buildinfo::{BuildInfo, GoVersion};
pub use error::InspectError;
pub use layout::{OffsetsSource, RuntimeLayout, render_table};
pub use probes::{CREATION_CALLERS, ProbeKind, ProbeSite, ReturnAddressAt};
pub use runtime::{NEWEST_MINOR, OLDEST_MINOR};
pub use shared::FileBytes;
pub use stackmap::{FrameKind, FrameMaps, PointerBitmap, StackObject};
pub use waitreason::WaitReasonTable;

use elf::Elf;
use pclntab::Pclntab;
use shared::SharedSlice;
use symtab::{PclnNames, SymbolIndex};

/// Largest file [`GoBinary::open`] reads.
pub const MAX_FILE_SIZE: u64 = 2 << 30;

/// Offset of `text` in `runtime.moduledata` (same in Go 1.19-1.27 per DWARF).
const MODULEDATA_TEXT: u64 = 176;
/// Offset of `etext` in `runtime.moduledata`.
const MODULEDATA_ETEXT: u64 = 184;
/// Look-alikes tried by the data scans for structures a real binary has once (pclntab header,
/// moduledata, wait reason array): each try reads through the section table, so crafted input
/// full of look-alikes would make a scan quadratic.
pub(crate) const MAX_SCAN_CANDIDATES: usize = 64;

/// CPU architecture of the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// AArch64.
    Arm64,
}

/// A source position for a PC: the one type for a place in the target's code, from symbolizing
/// a PC here, from a stack walk (goscope-memory) or as a park site or stack frame in goscope's
/// output. Serialized as `{"function","file","line"}`: `entry` is an address of one run of the
/// binary, not part of a source position, and so not compared either: two locations are equal
/// (and hash and order) by function, file and line.
#[derive(Debug, Clone, Serialize)]
pub struct Location {
    /// Function name ("runtime.gopark"). From [`GoBinary::symbolize`], the outermost (physical)
    /// function even for inlined code; from [`GoBinary::symbolize_frames`], each logical one.
    pub function: String,
    /// Source file ([`GoBinary::symbolize`]: of the innermost inlined position; "?" when unknown).
    pub file: String,
    /// Line (0 when unknown).
    pub line: u32,
    /// Entry address of the physical function (for an inlined frame: of the function it was
    /// inlined into, as `runtime.Frame.Entry`): link-time from [`GoBinary::symbolize`], the
    /// running process's address from goscope-memory's stack walks (load bias added).
    #[serde(skip)]
    pub entry: u64,
}

impl Location {
    /// A location with no known entry address (0), as tests and hand-built sites have.
    pub fn new(function: impl Into<String>, file: impl Into<String>, line: u32) -> Self {
        Self { function: function.into(), file: file.into(), line, entry: 0 }
    }
}

impl Location {
    fn position(&self) -> (&str, &str, u32) {
        (&self.function, &self.file, self.line)
    }
}

impl PartialEq for Location {
    fn eq(&self, other: &Self) -> bool {
        self.position() == other.position()
    }
}

impl Eq for Location {}

impl std::hash::Hash for Location {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.position().hash(state);
    }
}

impl PartialOrd for Location {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Location {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.position().cmp(&other.position())
    }
}

/// The former name of [`Location`].
pub type Frame = Location;

/// A function's address range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionInfo {
    /// Name as in the symbol table / pclntab.
    pub name: String,
    /// Entry (link-time virtual address).
    pub entry: u64,
    /// End (exclusive): symbol size from `.symtab`, else the next function's entry.
    pub end: u64,
}

/// Whether goscope can trace this binary, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Support {
    /// True iff amd64, Go 1.19–1.27 (or newer with a validated layout), layout resolved and all
    /// probe sites found.
    pub supported: bool,
    /// Why not, when `supported` is false (empty otherwise).
    pub reasons: Vec<String>,
    /// Informational notes (e.g. "go1.28 is newer than the newest table; ... validated",
    /// "wait reasons not found in the binary; using the go1.21 table").
    pub notes: Vec<String>,
}

/// An analysed Go binary. Cheap to query; everything is computed by [`GoBinary::open`].
#[derive(Clone)]
pub struct GoBinary {
    /// The executable's bytes, which the tables below are ranges of.
    file: FileBytes,
    build_info: BuildInfo,
    arch: Arch,
    stripped: bool,
    pie: bool,
    layout: RuntimeLayout,
    offsets_source: OffsetsSource,
    wait_reasons: WaitReasonTable,
    probe_sites: Vec<ProbeSite>,
    pcln: Pclntab,
    /// `moduledata.gofunc` as read from `runtime.firstmoduledata` (for tests).
    moduledata_gofunc: Option<u64>,
    /// `moduledata.types`: the base that type descriptors' name offsets are relative to.
    types_base: Option<u64>,
    /// `.gopclntab`'s functions by name.
    pcln_names: PclnNames,
    /// `.symtab`'s functions (by name, and by address for symbolizing when pclntab has no
    /// answer) and data (STT_OBJECT) symbols.
    symbols: SymbolIndex,
    reasons: Vec<String>,
    notes: Vec<String>,
}

impl std::fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoBinary")
            .field("build_info", &self.build_info)
            .field("arch", &self.arch)
            .field("stripped", &self.stripped)
            .field("pie", &self.pie)
            .field("offsets_source", &self.offsets_source)
            .field("pclntab", &self.pcln)
            .field("probe_sites", &self.probe_sites.len())
            .finish_non_exhaustive()
    }
}

impl GoBinary {
    /// Reads and analyses the file at `path` (refuses files larger than [`MAX_FILE_SIZE`]).
    pub fn open(path: &Path) -> Result<GoBinary, InspectError> {
        let io = |source| InspectError::Io { path: path.display().to_string(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_FILE_SIZE {
            return Err(InspectError::TooLarge { size: meta.len(), limit: MAX_FILE_SIZE });
        }
        let data = std::fs::read(path).map_err(io)?;
        GoBinary::from_file(Arc::new(data))
    }

    /// Analyses an in-memory ELF image (a copy of it is kept: see [`GoBinary::from_file`]).
    pub fn from_bytes(data: &[u8]) -> Result<GoBinary, InspectError> {
        if data.len() as u64 > MAX_FILE_SIZE {
            return Err(InspectError::TooLarge { size: data.len() as u64, limit: MAX_FILE_SIZE });
        }
        GoBinary::from_file(Arc::new(data.to_vec()))
    }

    /// Analyses the executable whose bytes are `file`. The result keeps `file` (not a copy of
    /// the tables it needs, `.gopclntab` and the symbol names): a caller that passes a mapping of
    /// the file holds in memory only the pages that lookups touch.
    pub fn from_file(file: FileBytes) -> Result<GoBinary, InspectError> {
        let data: &[u8] = (*file).as_ref();
        if data.len() as u64 > MAX_FILE_SIZE {
            return Err(InspectError::TooLarge { size: data.len() as u64, limit: MAX_FILE_SIZE });
        }
        let elf = Elf::parse(data)?;
        analyse(&elf, &file)
    }

    /// The executable's bytes, as given to [`GoBinary::from_file`].
    pub fn file(&self) -> &[u8] {
        (*self.file).as_ref()
    }

    /// Build information from `.go.buildinfo` and the build-id note.
    pub fn build_info(&self) -> &BuildInfo {
        &self.build_info
    }
    /// CPU architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }
    /// True when the binary lacks `.symtab` or DWARF.
    pub fn stripped(&self) -> bool {
        self.stripped
    }
    /// True for ET_DYN (position-independent) executables.
    pub fn pie(&self) -> bool {
        self.pie
    }
    /// Runtime struct offsets.
    pub fn layout(&self) -> &RuntimeLayout {
        &self.layout
    }
    /// Where [`GoBinary::layout`] came from.
    pub fn offsets_source(&self) -> OffsetsSource {
        self.offsets_source
    }
    /// Wait reason names.
    pub fn wait_reasons(&self) -> &WaitReasonTable {
        &self.wait_reasons
    }
    /// Uprobe sites (empty on arm64: placement is amd64-only for now; see [`GoBinary::support`]).
    pub fn probe_sites(&self) -> &[ProbeSite] {
        &self.probe_sites
    }

    /// Function, file and line for a link-time virtual address: the physical function, with the
    /// file:line of the innermost inlined call at `pc` (see [`GoBinary::symbolize_frames`]).
    pub fn symbolize(&self, pc: u64) -> Option<Location> {
        if let Some((function, file, line, entry)) = self.pcln.lookup(pc) {
            return Some(Location { function, file, line, entry });
        }
        let (entry, _, function) = self.symbols.function_at(pc)?;
        Some(Location { function, file: "?".into(), line: 0, entry })
    }

    /// The logical frames at a link-time virtual address, innermost first: one per function the
    /// compiler inlined at `pc`, then the physical function — what the runtime's tracebacks and
    /// `runtime.CallersFrames` show. Inlined frames have the physical function's `entry`; the
    /// innermost frame has `pc`'s file:line, each outer one the line of its call to the inner
    /// one. One frame when nothing is inlined at `pc` (or the inline tree was not found, see
    /// [`GoBinary::support`]'s notes); empty when `pc` is in no known function.
    ///
    /// `pc` is looked up as given: for a return address pass `pc - 1` (the call instruction), as
    /// the runtime does. [`GoBinary::symbolize`] gives the physical function with the innermost
    /// file:line instead (what the runtime prints for "created by").
    pub fn symbolize_frames(&self, pc: u64) -> Vec<Location> {
        if let Some((frames, entry)) = self.pcln.lookup_frames(pc) {
            return frames.into_iter().map(|f| Location { function: f.name, file: f.file, line: f.line, entry }).collect();
        }
        self.symbolize(pc).into_iter().collect()
    }

    /// What the runtime's garbage collector knows about the frame at `pc` (link-time; the resume
    /// PC of a goroutine's innermost frame or a return address): frame size, live pointer words
    /// of locals and arguments, stack objects. Works on stripped binaries (`.gopclntab`). None
    /// when `pc` is in no function with frame information; the maps inside are None where the
    /// FUNCDATA base (`moduledata.gofunc`) was not found or the tables are unusable.
    pub fn frame_maps(&self, pc: u64) -> Option<FrameMaps> {
        stackmap::frame_maps(&self.pcln, pc)
    }

    /// `moduledata.gofunc` (link-time address), the base of the inline trees; None when it was
    /// not found (inlined calls are then not expanded). For tests.
    #[doc(hidden)]
    pub fn gofunc(&self) -> Option<u64> {
        self.pcln.gofunc_vaddr()
    }

    /// The `gofunc` field of `runtime.firstmoduledata` as read from the file (what a stripped
    /// binary uses), whether or not it was used. For tests.
    #[doc(hidden)]
    pub fn moduledata_gofunc(&self) -> Option<u64> {
        self.moduledata_gofunc
    }

    /// Link-time address of `moduledata.types`, the base of the name offsets in type
    /// descriptors (`abi.Type.Str`); add the load bias for PIE. None when not found.
    pub fn types_base(&self) -> Option<u64> {
        self.types_base
    }

    /// A function by exact name: `.symtab` when present, else pclntab.
    pub fn function(&self, name: &str) -> Option<FunctionInfo> {
        let (entry, end) = self.symbols.function(name).or_else(|| self.pcln_names.function(&self.pcln, name))?;
        Some(FunctionInfo { name: name.to_string(), entry, end })
    }

    /// A function by exact name from `.gopclntab` only (works on stripped binaries).
    pub fn pclntab_function(&self, name: &str) -> Option<FunctionInfo> {
        let (entry, end) = self.pcln_names.function(&self.pcln, name)?;
        Some(FunctionInfo { name: name.to_string(), entry, end })
    }

    /// A function by exact name from the ELF `.symtab` only (None on stripped binaries).
    pub fn symtab_function(&self, name: &str) -> Option<FunctionInfo> {
        let (entry, end) = self.symbols.function(name)?;
        Some(FunctionInfo { name: name.to_string(), entry, end })
    }

    /// Link-time address of a data symbol (STT_OBJECT, e.g. "runtime.allgs") from the ELF
    /// `.symtab`; None on stripped binaries. Add the load bias for PIE.
    pub fn data_symbol(&self, name: &str) -> Option<u64> {
        self.symbols.object(name)
    }

    /// Number of functions in `.gopclntab`.
    pub fn pclntab_len(&self) -> usize {
        self.pcln.nfunc
    }

    /// Every function in `.gopclntab` as (name, entry, end).
    pub fn pclntab_functions(&self) -> Vec<FunctionInfo> {
        self.pcln.functions().map(|(n, e, x)| FunctionInfo { name: n.to_string(), entry: e, end: x }).collect()
    }

    /// The text start used for pclntab lookups (header `textStart`, or `moduledata.text` on 1.26+).
    pub fn text_start(&self) -> u64 {
        self.pcln.text_start
    }

    /// Whether goscope can trace this binary.
    pub fn support(&self) -> Support {
        Support { supported: self.reasons.is_empty(), reasons: self.reasons.clone(), notes: self.notes.clone() }
    }
}

/// Whether `data` is an ELF image of a Go program (build info or the Go build-id note), without
/// analysing it: the cheap first filter of the node agent.
pub fn is_go_binary(data: &[u8]) -> bool {
    Elf::parse(data).is_ok_and(|elf| buildinfo::find_buildinfo(&elf).is_some() || buildinfo::go_build_id(&elf).is_some())
}

fn analyse(elf: &Elf<'_>, file: &FileBytes) -> Result<GoBinary, InspectError> {
    let analyse::buildinfo::Identity { go_version, modinfo: mi, arch, build_id } = analyse::buildinfo::identify(elf)?;

    let analyse::symbols::Tables { pcln, moduledata_gofunc, gofunc_note, types_base, pcln_names, symbols } =
        analyse::symbols::read_tables(elf, file, go_version.minor)?;

    let has_symtab = elf.section(".symtab").is_some();
    let has_dwarf = elf.section(".debug_info").is_some() || elf.section(".zdebug_info").is_some();
    let settings = mi.settings;
    let cgo = settings.iter().any(|(k, v)| k == "CGO_ENABLED" && v == "1")
        || ["x_cgo_init", "crosscall2", "_cgo_sys_thread_start"]
            .iter()
            .any(|n| symbols.has_function(n) || elf.symbol(n).is_some() || elf.dynsym_names.iter().any(|d| d == n));
    let build_info = BuildInfo {
        go_version: go_version.clone(),
        path: mi.path,
        module: mi.module,
        module_version: mi.module_version,
        settings,
        cgo,
        build_id,
    };

    let mut reasons = Vec::new();
    let mut notes: Vec<String> = gofunc_note.into_iter().collect();
    let minor = go_version.minor;
    if arch != Arch::Amd64 {
        reasons.push(format!("architecture {arch:?}: probe placement is implemented for amd64 only"));
    }

    // Function bodies needed by probes and validation.
    let func_range = |name: &str| -> Option<(u64, u64)> { symbols.function(name).or_else(|| pcln_names.function(&pcln, name)) };
    let body = |name: &str| -> Option<(u64, &[u8])> {
        let (entry, end) = func_range(name)?;
        let len = end.checked_sub(entry)?.min(1 << 20);
        Some((entry, elf.read(entry, len)?))
    };

    let analyse::layout::Runtime { wait_reasons, layout, offsets_source } =
        analyse::layout::read_runtime(elf, arch, &go_version, &body, &mut notes, &mut reasons)?;

    let probe_sites =
        if arch == Arch::Amd64 { analyse::sites::place(elf, &body, minor, &mut notes, &mut reasons) } else { Vec::new() };

    Ok(GoBinary {
        file: Arc::clone(file),
        build_info,
        arch,
        stripped: !has_symtab || !has_dwarf,
        pie: elf.e_type == object::elf::ET_DYN,
        layout,
        offsets_source,
        wait_reasons,
        probe_sites,
        pcln,
        moduledata_gofunc,
        types_base,
        pcln_names,
        symbols,
        reasons,
        notes,
    })
}

/// Looks up a function's (entry, code bytes) by name.
type BodyFn<'f, 'a> = dyn Fn(&str) -> Option<(u64, &'a [u8])> + 'f;

/// `.gopclntab` (or `.data.rel.ro.gopclntab` in PIE builds). Otherwise — no section headers, or
/// an external linker that merged the table into `.data.rel.ro` (seen with lld-linked binaries
/// such as the docker CLI) — the first 8-aligned plausible header in a PT_LOAD segment.
fn find_pclntab(elf: &Elf<'_>, file: &FileBytes) -> Result<Pclntab, InspectError> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = elf.section(name)
            && let Some(d) = elf.section_data(s)
        {
            return Pclntab::parse_shared(SharedSlice::of(file, d), s.addr);
        }
    }
    // Each candidate that parses is checked for plausibility: give up after a few decoys rather
    // than check once per 8 bytes of crafted input.
    let mut candidates = 0;
    'scan: for (vaddr, bytes) in elf.load_regions() {
        let skip = ((8 - (vaddr % 8)) % 8) as usize;
        let mut off = skip;
        while off + 72 <= bytes.len() {
            if pclntab::looks_like_header(&bytes[off..]) {
                candidates += 1;
                if candidates > MAX_SCAN_CANDIDATES {
                    break 'scan;
                }
                if let Ok(p) = Pclntab::parse_shared(SharedSlice::of(file, &bytes[off..]), vaddr.wrapping_add(off as u64))
                    && p.plausible()
                {
                    return Ok(p);
                }
            }
            off += 8;
        }
    }
    Err(InspectError::MissingSymbol {
        name: "runtime.pclntab".into(),
        reason: "no .gopclntab section and no pclntab header found in the loadable segments".into(),
    })
}

/// `runtime.firstmoduledata` and its `text` field, as (address, text): moduledata starts with
/// `pcHeader`, the pclntab address. Looks in `.go.module` (1.26+) first, then every writable
/// region, for an 8-aligned pointer equal to the pclntab address whose `text`/`etext` fields
/// look like an executable range.
fn find_moduledata(elf: &Elf<'_>, pclntab_vaddr: u64) -> Option<(u64, u64)> {
    let tries = std::cell::Cell::new(0);
    let check = |md: u64| -> Option<(u64, u64)> {
        tries.set(tries.get() + 1);
        if tries.get() > MAX_SCAN_CANDIDATES {
            return None;
        }
        let text = elf.read_ptr(md.checked_add(MODULEDATA_TEXT)?)?;
        let etext = elf.read_ptr(md.checked_add(MODULEDATA_ETEXT)?)?;
        (text != 0 && etext > text && elf.is_executable(text)).then_some((md, text))
    };
    if let Some(s) = elf.section(".go.module")
        && s.addr != 0
        && elf.read_ptr(s.addr) == Some(pclntab_vaddr)
        && let Some(t) = check(s.addr)
    {
        return Some(t);
    }
    for (base, bytes) in elf.writable_regions() {
        let skip = ((8 - (base % 8)) % 8) as usize;
        let mut off = skip;
        while off + 8 <= bytes.len() {
            let md = base.wrapping_add(off as u64);
            if elf::le_u64(bytes, off) == Some(pclntab_vaddr)
                && let Some(t) = check(md)
            {
                return Some(t);
            }
            off += 8;
        }
    }
    // PIE with pointers left to dynamic relocations.
    let mut relocs: Vec<u64> = elf.relative_relocs.iter().filter(|(_, v)| **v == pclntab_vaddr).map(|(k, _)| *k).collect();
    relocs.sort();
    relocs.into_iter().find_map(check)
}

/// Offset of `gofunc` in `runtime.moduledata` ([`runtime::MODULEDATA_GOFUNC`]). Newer versions
/// are tried with the newest offset and kept only if the inline trees check out.
fn moduledata_gofunc_offset(minor: u32) -> u64 {
    runtime::at(runtime::MODULEDATA_GOFUNC, minor.max(OLDEST_MINOR)).unwrap_or(0)
}

/// Offset of `types` in `runtime.moduledata` ([`runtime::MODULEDATA_TYPES`]).
fn moduledata_types_offset(minor: u32) -> u64 {
    runtime::at(runtime::MODULEDATA_TYPES, minor.max(OLDEST_MINOR)).unwrap_or(0)
}

/// Gives `pcln` the base of FUNCDATA offsets (`moduledata.gofunc`, needed for the inline trees):
/// the `go:func.*` symbol (`go.func.*` before 1.20) when there is a symbol table, else the
/// moduledata field (`moduledata_gofunc`). A candidate is kept only if the inline-tree records it yields name
/// functions ([`Pclntab::check_gofunc`]). Returns a note when none is usable.
fn set_gofunc(elf: &Elf<'_>, file: &FileBytes, pcln: &mut Pclntab, moduledata_gofunc: Option<u64>) -> Option<String> {
    let mut candidates = Vec::new();
    for name in ["go:func.*", "go.func.*"] {
        if let Some(s) = elf.symbol(name).filter(|s| s.value != 0) {
            candidates.push(s.value);
        }
    }
    candidates.extend(moduledata_gofunc);
    candidates.dedup();
    for vaddr in candidates {
        pcln.set_gofunc(vaddr, gofunc_bytes(elf, vaddr, pcln.vaddr).map(|b| SharedSlice::of(file, b)));
        let (checked, good) = pcln.check_gofunc(32);
        if checked > 0 && good == checked {
            return None;
        }
        pcln.clear_gofunc();
    }
    Some("moduledata.gofunc (the inline tree base) not found: inlined calls are not expanded in stacks".into())
}

/// The file bytes from `vaddr` to the end of the section (or, without sections, the PT_LOAD
/// segment) holding it, stopping at the pclntab when that follows.
fn gofunc_bytes<'a>(elf: &Elf<'a>, vaddr: u64, pclntab_vaddr: u64) -> Option<&'a [u8]> {
    let mut end = elf
        .sections
        .iter()
        .find(|s| s.has_file_data() && s.addr != 0 && vaddr >= s.addr && vaddr - s.addr < s.size)
        .map(|s| s.addr.saturating_add(s.size))
        .or_else(|| {
            elf.loads().find(|g| vaddr >= g.vaddr && vaddr - g.vaddr < g.filesz).map(|g| g.vaddr.saturating_add(g.filesz))
        })?;
    if pclntab_vaddr > vaddr {
        end = end.min(pclntab_vaddr);
    }
    elf.read(vaddr, end - vaddr)
}

/// Checks a layout against the runtime's machine code (amd64). Each check is a field the
/// function is known (from the runtime source of 1.19-1.27) to access with a `[reg+disp]`
/// operand:
/// * `runtime.newproc1` initialises the new g: `goid`, `gopc`, `startpc`, `parentGoid` (8 bytes);
/// * `runtime.gopark` loads `mp.curg` (8 bytes) and stores the 1-byte `gp.waitreason`;
/// * `runtime.chansend` takes `&c.lock` (LEA or access), stores `mysg.c` (8 bytes; on 1.26+ the
///   `vu` word), `mysg.elem` and `gp.waiting`.
///
/// A layout from another version fails this, because every layout change so far moved at least
/// one of these fields (verified for all pairs of 1.19-1.27 tables against real binaries).
fn validate_code<'a>(l: &RuntimeLayout, body: &BodyFn<'_, 'a>) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut check = |func: &str, fields: &[(&str, Option<u32>, Option<usize>, bool)]| {
        let Some((e, code)) = body(func) else {
            missing.push(format!("{func} not found"));
            return;
        };
        let d = probes::displacements(code, e);
        for (name, off, size, write) in fields {
            let Some(off) = off else { continue };
            let ok = d.iter().any(|(o, w, s)| *o == u64::from(*off) && size.is_none_or(|z| z == *s) && (!write || *w));
            if !ok {
                missing.push(format!("{name}={off} not accessed in {func}"));
            }
        }
    };
    check(
        "runtime.newproc1",
        &[
            ("g.goid", Some(l.g_goid), Some(8), false),
            ("g.gopc", Some(l.g_gopc), Some(8), false),
            ("g.startpc", Some(l.g_startpc), Some(8), false),
            ("g.parentGoid", l.g_parent_goid, Some(8), false),
        ],
    );
    check("runtime.gopark", &[("m.curg", Some(l.m_curg), Some(8), false), ("g.waitreason", Some(l.g_waitreason), Some(1), true)]);
    check(
        "runtime.chansend",
        &[
            ("hchan.lock", Some(l.hchan_lock), None, false),
            ("sudog.c", Some(l.sudog_c), Some(8), true),
            ("sudog.elem", Some(l.sudog_elem), Some(8), true),
            ("g.waiting", Some(l.g_waiting), Some(8), true),
        ],
    );
    if missing.is_empty() { Ok(()) } else { Err(missing.join("; ")) }
}

/// Validation for a version newer than every table: the code must agree with the layout
/// ([`validate_code`]) and the wait reason table read from the binary must equal the table's.
fn validate_newer<'a>(
    arch: Arch,
    l: &RuntimeLayout,
    t: &layout::Table,
    wr: &WaitReasonTable,
    body: &BodyFn<'_, 'a>,
) -> Result<(), String> {
    if arch != Arch::Amd64 {
        return Err("layout validation needs amd64 code".into());
    }
    if wr.source() != "binary" {
        return Err("wait reason table not found in the binary".into());
    }
    if wr.names() != t.wait_reasons.as_slice() {
        return Err(format!(
            "wait reasons differ from go1.{} ({} entries in the binary, {} in the table)",
            t.minor,
            wr.len(),
            t.wait_reasons.len()
        ));
    }
    validate_code(l, body)
}

/// Entries of a layout as read from DWARF (for the table generator); None without DWARF.
#[doc(hidden)]
pub fn dwarf_entries(data: &[u8]) -> Result<Option<BTreeMap<String, u32>>, InspectError> {
    let elf = Elf::parse(data)?;
    Ok(dwarf::read_structs(&elf)?.map(|s| layout::entries_from_dwarf(&s)))
}

/// Validates `layout` against this binary's runtime code (amd64). Exposed for tests.
#[doc(hidden)]
pub fn validate_layout(data: &[u8], layout: &RuntimeLayout) -> Result<(), String> {
    let file: FileBytes = Arc::new(data.to_vec());
    let elf = Elf::parse((*file).as_ref()).map_err(|e| e.to_string())?;
    let bin = analyse(&elf, &file).map_err(|e| e.to_string())?;
    let body = |name: &str| -> Option<(u64, &[u8])> {
        let f = bin.function(name)?;
        let len = f.end.checked_sub(f.entry)?.min(1 << 20);
        Some((f.entry, elf.read(f.entry, len)?))
    };
    validate_code(layout, &body)
}

/// The checked-in layout for Go 1.`minor`, if any. Exposed for tests and the CLI.
pub fn table_layout(minor: u32) -> Option<RuntimeLayout> {
    RuntimeLayout::from_entries(&layout::table(minor)?.entries).ok()
}

/// The checked-in wait reason names for Go 1.`minor`, if any.
pub fn table_wait_reasons(minor: u32) -> Option<Vec<String>> {
    Some(layout::table(minor)?.wait_reasons)
}

/// Wait reason names found by the stripped-binary data scan only (for tests).
#[doc(hidden)]
pub fn wait_reasons_by_scan(data: &[u8]) -> Option<Vec<String>> {
    let elf = Elf::parse(data).ok()?;
    waitreason::scan(&elf).map(|(_, names)| names)
}

/// Whether a goroutine whose function is `start_function` is one the runtime started for itself
/// (GC workers, finalizers, ...): the runtime's tracebacks hide these and `runtime.NumGoroutine`
/// does not count them. `runtime.main` (goroutine 1) and the user-facing runtime entry points
/// are user goroutines.
pub fn is_runtime_goroutine(start_function: &str) -> bool {
    start_function.starts_with("runtime.")
        && !matches!(start_function, "runtime.main" | "runtime.corostart" | "runtime.handleAsyncEvent")
}
