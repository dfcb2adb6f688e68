//! Minimal ELF view on top of `object`'s low-level ELF parser: section and segment tables, symbol
//! table, notes, and reads by link-time virtual address. Everything is bounds-checked against the
//! input; nothing here allocates more than a small multiple of the header counts, which are
//! themselves bounded by the file size.

use std::borrow::Cow;
use std::collections::HashMap;

use object::Endianness;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, Sym};

use crate::error::{InspectError, Result};

/// Upper bound for one decompressed DWARF section.
const MAX_DECOMPRESSED_SECTION: u64 = 256 << 20;
/// Largest expansion of zlib/deflate data (258-byte matches coded in 2 bits, plus headers).
const MAX_DEFLATE_RATIO: u64 = 1032;

#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

impl Section {
    pub fn has_file_data(&self) -> bool {
        self.sh_type != elf::SHT_NOBITS && self.sh_type != elf::SHT_NULL
    }
    pub fn writable(&self) -> bool {
        self.flags & u64::from(elf::SHF_WRITE) != 0
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub p_type: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl Segment {
    pub fn writable(&self) -> bool {
        self.flags & elf::PF_W != 0
    }
    pub fn executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Symbol {
    pub name: String,
    /// Where `name` starts in [`Elf::symbol_names`].
    pub name_offset: u32,
    pub value: u64,
    pub size: u64,
    pub kind: u8,
}

/// Parsed ELF headers borrowing the file bytes.
pub(crate) struct Elf<'a> {
    pub data: &'a [u8],
    pub e_type: u16,
    pub machine: u16,
    pub sections: Vec<Section>,
    pub segments: Vec<Segment>,
    /// `.symtab` (not `.dynsym`) function and object symbols.
    pub symbols: Vec<Symbol>,
    /// The string table `.symtab`'s names are in.
    pub symbol_names: Option<&'a [u8]>,
    /// Names from `.dynsym` (used only for cgo detection).
    pub dynsym_names: Vec<String>,
    /// R_X86_64_RELATIVE / R_AARCH64_RELATIVE addends by target address (PIE / external link).
    pub relative_relocs: HashMap<u64, u64>,
}

fn sec_err(e: object::read::Error, what: &str) -> InspectError {
    InspectError::malformed(format!("{what}: {e}"))
}

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>> {
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(InspectError::NotElf);
        }
        if data.len() < 6 {
            return Err(InspectError::truncated("ELF identification"));
        }
        if data[4] != elf::ELFCLASS64 {
            return Err(InspectError::UnsupportedArch {
                arch: "32-bit ELF".into(),
                reason: "only 64-bit x86-64 and arm64 Go binaries are supported".into(),
            });
        }
        if data[5] != elf::ELFDATA2LSB {
            return Err(InspectError::UnsupportedArch {
                arch: "big-endian ELF".into(),
                reason: "only little-endian x86-64 and arm64 Go binaries are supported".into(),
            });
        }
        let header =
            elf::FileHeader64::<Endianness>::parse(data).map_err(|e| InspectError::truncated(format!("ELF header ({e})")))?;
        let endian = header.endian().map_err(|e| sec_err(e, "ELF header"))?;
        let e_type = header.e_type(endian);
        let machine = header.e_machine(endian);

        let mut segments = Vec::new();
        // A broken program header table is tolerated (sections may still be usable).
        if let Ok(phdrs) = header.program_headers(endian, data) {
            for ph in phdrs {
                segments.push(Segment {
                    p_type: ph.p_type(endian),
                    flags: ph.p_flags(endian),
                    vaddr: ph.p_vaddr(endian),
                    offset: ph.p_offset(endian),
                    filesz: ph.p_filesz(endian),
                    memsz: ph.p_memsz(endian),
                });
            }
        }

        let mut sections = Vec::new();
        let mut symbols = Vec::new();
        let mut symbol_names = None;
        let mut dynsym_names = Vec::new();
        let mut relative_relocs = HashMap::new();
        if let Ok(table) = header.sections(endian, data) {
            for sh in table.iter() {
                let name = table.section_name(endian, sh).map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default();
                sections.push(Section {
                    name,
                    sh_type: sh.sh_type(endian),
                    flags: sh.sh_flags(endian),
                    addr: sh.sh_addr(endian),
                    offset: sh.sh_offset(endian),
                    size: sh.sh_size(endian),
                });
            }
            // Symbols may all point into one long string: bound the bytes copied out by the input
            // size (a 550 KB file took 2.3 GB), and stop at a name that runs off its table
            // (each such lookup scans to the end of the table).
            let mut name_budget = data.len().saturating_mul(2).saturating_add(1 << 20);
            let mut copy_name = |name: &[u8]| -> Option<String> {
                name_budget = name_budget.checked_sub(name.len() + 1)?;
                Some(String::from_utf8_lossy(name).into_owned())
            };
            if let Ok(symtab) = table.symbols(endian, data, elf::SHT_SYMTAB) {
                symbol_names = sections.get(symtab.string_section().0).and_then(|s| file_range(data, s.offset, s.size));
                for sym in symtab.iter() {
                    let kind = sym.st_type();
                    if kind != elf::STT_FUNC && kind != elf::STT_OBJECT {
                        continue;
                    }
                    let Some(name) = symtab.symbol_name(endian, sym).ok().and_then(&mut copy_name) else {
                        break;
                    };
                    let name_offset = sym.st_name(endian);
                    symbols.push(Symbol { name, name_offset, value: sym.st_value(endian), size: sym.st_size(endian), kind });
                }
            }
            if let Ok(dynsym) = table.symbols(endian, data, elf::SHT_DYNSYM) {
                for sym in dynsym.iter() {
                    let Ok(name) = dynsym.symbol_name(endian, sym) else {
                        break;
                    };
                    if !name.is_empty() {
                        let Some(name) = copy_name(name) else { break };
                        dynsym_names.push(name);
                    }
                }
            }
            // RELA relocations: only the RELATIVE ones, to recover pointer values that a PIE or
            // externally linked binary leaves as 0 in the file.
            let relative = match machine {
                elf::EM_X86_64 => elf::R_X86_64_RELATIVE,
                elf::EM_AARCH64 => elf::R_AARCH64_RELATIVE,
                _ => u32::MAX,
            };
            for (i, sh) in table.iter().enumerate() {
                if sh.sh_type(endian) != elf::SHT_RELA {
                    continue;
                }
                let Some(bytes) = sections.get(i).and_then(|s| file_range(data, s.offset, s.size)) else {
                    continue;
                };
                for chunk in bytes.as_chunks::<24>().0 {
                    let r_offset = le_u64(chunk, 0).unwrap_or(0);
                    let r_info = le_u64(chunk, 8).unwrap_or(0);
                    let r_addend = le_u64(chunk, 16).unwrap_or(0);
                    if (r_info & 0xffff_ffff) as u32 == relative {
                        relative_relocs.insert(r_offset, r_addend);
                    }
                }
            }
        }
        Ok(Elf { data, e_type, machine, sections, segments, symbols, symbol_names, dynsym_names, relative_relocs })
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// File bytes of a section (None for NOBITS or out-of-range sections).
    pub fn section_data(&self, s: &Section) -> Option<&'a [u8]> {
        if !s.has_file_data() {
            return None;
        }
        file_range(self.data, s.offset, s.size)
    }

    pub fn loads(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.p_type == elf::PT_LOAD)
    }

    /// File offset of a link-time virtual address (via the PT_LOAD that maps it from the file,
    /// else via a section).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        for seg in self.loads() {
            if vaddr >= seg.vaddr && vaddr - seg.vaddr < seg.filesz {
                return (vaddr - seg.vaddr).checked_add(seg.offset);
            }
        }
        for s in &self.sections {
            if s.has_file_data() && s.addr != 0 && vaddr >= s.addr && vaddr - s.addr < s.size {
                return (vaddr - s.addr).checked_add(s.offset);
            }
        }
        None
    }

    /// `len` bytes at link-time virtual address `vaddr`, if they are all backed by the file.
    pub fn read(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        for seg in self.loads() {
            if vaddr >= seg.vaddr && vaddr - seg.vaddr < seg.filesz {
                let rel = vaddr - seg.vaddr;
                if len > seg.filesz - rel {
                    return None;
                }
                return file_range(self.data, seg.offset.checked_add(rel)?, len);
            }
        }
        for s in &self.sections {
            if s.has_file_data() && s.addr != 0 && vaddr >= s.addr && vaddr - s.addr < s.size {
                let rel = vaddr - s.addr;
                if len > s.size - rel {
                    return None;
                }
                return file_range(self.data, s.offset.checked_add(rel)?, len);
            }
        }
        None
    }

    /// A pointer-sized value stored at `vaddr`; if the file holds 0 there and a RELATIVE
    /// relocation targets it, the relocation addend (the link-time value).
    pub fn read_ptr(&self, vaddr: u64) -> Option<u64> {
        let v = le_u64(self.read(vaddr, 8)?, 0)?;
        if v == 0
            && let Some(a) = self.relative_relocs.get(&vaddr)
        {
            return Some(*a);
        }
        Some(v)
    }

    pub fn is_executable(&self, vaddr: u64) -> bool {
        let mut any = false;
        for seg in self.loads() {
            any = true;
            if seg.executable() && vaddr >= seg.vaddr && vaddr - seg.vaddr < seg.memsz {
                return true;
            }
        }
        if !any {
            return self
                .sections
                .iter()
                .any(|s| s.flags & u64::from(elf::SHF_EXECINSTR) != 0 && vaddr >= s.addr && vaddr - s.addr < s.size);
        }
        false
    }

    /// Regions of file-backed writable data: writable sections with data if there is a section
    /// table, else writable PT_LOAD segments. Returned as (vaddr, bytes).
    pub fn writable_regions(&self) -> Vec<(u64, &'a [u8])> {
        let mut out = Vec::new();
        let have_sections = self.sections.iter().any(|s| s.has_file_data() && s.addr != 0);
        if have_sections {
            for s in &self.sections {
                if s.writable()
                    && s.addr != 0
                    && let Some(d) = self.section_data(s)
                {
                    out.push((s.addr, d));
                }
            }
        } else {
            for seg in self.loads() {
                if seg.writable()
                    && let Some(d) = file_range(self.data, seg.offset, seg.filesz)
                {
                    out.push((seg.vaddr, d));
                }
            }
        }
        self.bounded(out)
    }

    /// Read-only, non-executable file-backed regions (for finding pclntab without sections);
    /// falls back to every PT_LOAD.
    pub fn load_regions(&self) -> Vec<(u64, &'a [u8])> {
        self.bounded(
            self.loads().filter_map(|seg| file_range(self.data, seg.offset, seg.filesz).map(|d| (seg.vaddr, d))).collect(),
        )
    }

    /// The leading `regions` whose sizes add up to at most twice the file size. Real sections
    /// and segments barely overlap; crafted ones can all cover the same bytes, which made every
    /// scan over the regions quadratic (15,000 copies of one 1 MB section: 3 s to say NotGo).
    fn bounded<T>(&self, mut regions: Vec<(T, &'a [u8])>) -> Vec<(T, &'a [u8])> {
        let mut total = 0usize;
        let limit = self.data.len().saturating_mul(2);
        let keep = regions
            .iter()
            .take_while(|(_, d)| {
                total = total.saturating_add(d.len());
                total <= limit
            })
            .count();
        regions.truncate(keep);
        regions
    }

    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }

    /// Section data, transparently inflating SHF_COMPRESSED (ELF `Chdr`) and GNU `.zdebug_*`
    /// zlib sections. Looks up `name` (".debug_info") and the `.zdebug_` spelling.
    /// `budget` is the number of decompressed bytes still allowed; it is reduced by the claimed
    /// size before anything is allocated.
    pub fn debug_section(&self, name: &str, budget: &mut u64) -> Result<Option<Cow<'a, [u8]>>> {
        let zname = name.strip_prefix(".debug_").map(|rest| format!(".zdebug_{rest}"));
        let (sec, gnu) = match self.section(name) {
            Some(s) => (s, false),
            None => match zname.as_deref().and_then(|z| self.section(z)) {
                Some(s) => (s, true),
                None => return Ok(None),
            },
        };
        let Some(raw) = self.section_data(sec) else {
            return Ok(None);
        };
        let (format, payload, size) = if sec.flags & u64::from(elf::SHF_COMPRESSED) != 0 {
            // Elf64_Chdr: ch_type u32, ch_reserved u32, ch_size u64, ch_addralign u64.
            if raw.len() < 24 {
                return Err(InspectError::truncated(format!("compression header of {}", sec.name)));
            }
            let ch_type = le_u32(raw, 0).unwrap_or(0);
            let ch_size = le_u64(raw, 8).unwrap_or(0);
            if ch_type != elf::ELFCOMPRESS_ZLIB {
                // Go only writes zlib; other formats are not trusted with unbounded output.
                return Ok(None);
            }
            (object::CompressionFormat::Zlib, &raw[24..], ch_size)
        } else if gnu || raw.starts_with(b"ZLIB") {
            if raw.len() < 12 || &raw[..4] != b"ZLIB" {
                return Ok(None);
            }
            let mut sz = [0u8; 8];
            sz.copy_from_slice(&raw[4..12]);
            (object::CompressionFormat::Zlib, &raw[12..], u64::from_be_bytes(sz))
        } else {
            return Ok(Some(Cow::Borrowed(raw)));
        };
        // The output buffer is allocated at the claimed size up front: cap it by what the
        // payload can inflate to (deflate expands at most ~1032:1), not only by the constants.
        let limit = MAX_DECOMPRESSED_SECTION.min(*budget).min((payload.len() as u64).saturating_mul(MAX_DEFLATE_RATIO));
        if size > limit {
            return Err(InspectError::malformed(format!("{} claims {size} bytes uncompressed (limit {limit})", sec.name)));
        }
        *budget -= size;
        let cd = object::CompressedData { format, data: payload, uncompressed_size: size };
        let out = cd.decompress().map_err(|e| InspectError::malformed(format!("cannot inflate {}: {e}", sec.name)))?;
        Ok(Some(out))
    }

    /// Descriptors of ELF notes with the given owner and type, from SHT_NOTE sections or, when
    /// there are no sections, PT_NOTE segments.
    pub fn notes(&self, owner: &[u8], n_type: u32) -> Vec<&'a [u8]> {
        let mut blobs: Vec<&'a [u8]> = Vec::new();
        for s in &self.sections {
            if s.sh_type == elf::SHT_NOTE
                && let Some(d) = self.section_data(s)
            {
                blobs.push(d);
            }
        }
        if blobs.is_empty() {
            for seg in &self.segments {
                if seg.p_type == elf::PT_NOTE
                    && let Some(d) = file_range(self.data, seg.offset, seg.filesz)
                {
                    blobs.push(d);
                }
            }
        }
        let mut out = Vec::new();
        for (_, blob) in self.bounded(blobs.into_iter().map(|b| ((), b)).collect()) {
            let mut pos = 0usize;
            while pos + 12 <= blob.len() {
                let namesz = le_u32(blob, pos).unwrap_or(0) as usize;
                let descsz = le_u32(blob, pos + 4).unwrap_or(0) as usize;
                let ty = le_u32(blob, pos + 8).unwrap_or(0);
                let name_start = pos + 12;
                let Some(name_end) = name_start.checked_add(namesz) else {
                    break;
                };
                let desc_start = align4(name_end);
                let Some(desc_end) = desc_start.checked_add(descsz) else {
                    break;
                };
                if desc_end > blob.len() {
                    break;
                }
                let name = &blob[name_start..name_end];
                let name_len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
                let name = &name[..name_len];
                if name == owner && ty == n_type {
                    out.push(&blob[desc_start..desc_end]);
                }
                pos = align4(desc_end);
            }
        }
        out
    }
}

fn align4(x: usize) -> usize {
    x.saturating_add(3) & !3
}

pub(crate) fn file_range(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    let end = start.checked_add(len)?;
    data.get(start..end)
}

pub(crate) fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

pub(crate) fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_le_bytes(a))
}
