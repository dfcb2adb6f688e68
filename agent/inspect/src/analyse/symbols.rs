//! The function tables: `.gopclntab` (every Go binary has it, stripped or not), `.symtab` when
//! present, and what `runtime.firstmoduledata` adds (the FUNCDATA base, the type descriptors).
use std::collections::HashMap;

use crate::{
    InspectError, elf::Elf, find_moduledata, find_pclntab, moduledata_gofunc_offset, moduledata_types_offset, pclntab::Pclntab,
    set_gofunc,
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
    /// Functions from `.gopclntab`: name -> (entry, end).
    pub pcln_funcs: HashMap<String, (u64, u64)>,
    /// Functions from `.symtab`: name -> (entry, end).
    pub symtab_funcs: HashMap<String, (u64, u64)>,
    /// `.symtab` functions as sorted (entry, end, name).
    pub symtab_sorted: Vec<(u64, u64, String)>,
    /// `.symtab` data symbols: name -> address.
    pub symtab_objects: HashMap<String, u64>,
}

/// Reads the function tables of a Go 1.`minor` binary.
pub(crate) fn read_tables(elf: &Elf<'_>, minor: u32) -> Result<Tables, InspectError> {
    let mut pcln = find_pclntab(elf)?;
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
    let gofunc_note = set_gofunc(elf, &mut pcln, moduledata_gofunc);
    let types_base = elf.symbol("runtime.types").map(|s| s.value).filter(|v| *v != 0).or_else(|| {
        moduledata
            .and_then(|(md, _)| md.checked_add(moduledata_types_offset(minor)))
            .and_then(|a| elf.read_ptr(a))
            .filter(|v| *v != 0)
    });
    let mut pcln_funcs: HashMap<String, (u64, u64)> = HashMap::with_capacity(pcln.nfunc);
    for (name, entry, end) in pcln.functions() {
        // Assembly functions appear twice (ABI0 body + ABIInternal wrapper); keep the first.
        pcln_funcs.entry(name.to_string()).or_insert((entry, end));
    }
    let mut symtab_funcs = HashMap::new();
    let mut symtab_sorted = Vec::new();
    for s in &elf.symbols {
        if s.kind == object::elf::STT_FUNC && s.value != 0 {
            let end = s.value.saturating_add(s.size.max(1));
            symtab_funcs.entry(s.name.clone()).or_insert((s.value, end));
            symtab_sorted.push((s.value, end, s.name.clone()));
        }
    }
    symtab_sorted.sort();
    let symtab_objects: HashMap<String, u64> = elf
        .symbols
        .iter()
        .filter(|s| s.kind == object::elf::STT_OBJECT && s.value != 0)
        .map(|s| (s.name.clone(), s.value))
        .collect();
    Ok(Tables { pcln, moduledata_gofunc, gofunc_note, types_base, pcln_funcs, symtab_funcs, symtab_sorted, symtab_objects })
}
