//! The function tables: `.gopclntab` (every Go binary has it, stripped or not), `.symtab` when
//! present, and what `runtime.firstmoduledata` adds (the FUNCDATA base, the type descriptors).
//! The tables are ranges of the executable's bytes plus compact indexes ([`crate::symtab`]).
use crate::{
    InspectError,
    elf::Elf,
    find_moduledata, find_pclntab, moduledata_gofunc_offset, moduledata_types_offset,
    pclntab::Pclntab,
    set_gofunc,
    shared::{FileBytes, SharedSlice},
    symtab::{PclnNames, SymbolIndex},
};

/// Where functions and data symbols are.
pub(crate) struct Tables {
    pub pcln: Pclntab,
    /// `moduledata.gofunc` as read from `runtime.firstmoduledata`.
    pub moduledata_gofunc: Option<u64>,
    /// Why no FUNCDATA base was usable, if none was.
    pub gofunc_note: Option<String>,
    /// `moduledata.types`: the base of type descriptors' name offsets.
    pub types_base: Option<u64>,
    /// Functions from `.gopclntab` by name.
    pub pcln_names: PclnNames,
    /// Functions and data objects from `.symtab`.
    pub symbols: SymbolIndex,
}

/// Reads the function tables of a Go 1.`minor` binary whose bytes are `file` (`elf` reads them).
pub(crate) fn read_tables(elf: &Elf<'_>, file: &FileBytes, minor: u32) -> Result<Tables, InspectError> {
    let mut pcln = find_pclntab(elf, file)?;
    let moduledata = find_moduledata(elf, pcln.vaddr);
    if pcln.header_text_start == 0 {
        pcln.text_start = moduledata.map(|(_, text)| text).ok_or_else(|| {
            InspectError::malformed(
                "pclntab has no textStart (Go 1.26+) and runtime.firstmoduledata was not found in .go.module or writable data",
            )
        })?;
    }
    let moduledata_gofunc = moduledata
        .and_then(|(md, _)| md.checked_add(moduledata_gofunc_offset(minor)))
        .and_then(|a| elf.read_ptr(a))
        .filter(|v| *v != 0);
    let gofunc_note = set_gofunc(elf, file, &mut pcln, moduledata_gofunc);
    let types_base = elf.symbol("runtime.types").map(|s| s.value).filter(|v| *v != 0).or_else(|| {
        moduledata
            .and_then(|(md, _)| md.checked_add(moduledata_types_offset(minor)))
            .and_then(|a| elf.read_ptr(a))
            .filter(|v| *v != 0)
    });
    let pcln_names = PclnNames::new(&pcln);
    let symbols = SymbolIndex::new(&elf.symbols, elf.symbol_names.map(|names| SharedSlice::of(file, names)));
    Ok(Tables { pcln, moduledata_gofunc, gofunc_note, types_base, pcln_names, symbols })
}
