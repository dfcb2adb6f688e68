//! Compact name and address indexes over the executable's symbol tables, kept for the binary's
//! whole life. A large binary has ~70k functions: hash maps of owned names cost ~40 MB there,
//! these a few bytes per symbol, because names stay in the file (`.strtab`, the pclntab's name
//! table) and only offsets and addresses are held.
use std::cmp::Ordering;

use crate::{elf::Symbol, pclntab::Pclntab, shared::SharedSlice};

/// Longest name read from a string table (as the pclntab reader's bound).
const MAX_NAME: usize = 1 << 16;

/// A `.symtab` function: address range and where its name is.
#[derive(Clone, Copy)]
struct FunctionSym {
    entry: u64,
    size: u32,
    name: u32,
}

impl FunctionSym {
    fn end(&self) -> u64 {
        self.entry.saturating_add(u64::from(self.size))
    }
}

/// A `.symtab` data object: address and where its name is.
#[derive(Clone, Copy)]
struct ObjectSym {
    address: u64,
    name: u32,
}

/// `.symtab`'s functions (by address and by name) and data objects (by name).
#[derive(Clone)]
pub(crate) struct SymbolIndex {
    /// The string table the names are in (None: no `.symtab`).
    names: Option<SharedSlice>,
    /// Sorted by (entry, end, name), for symbolizing.
    functions: Box<[FunctionSym]>,
    /// Indexes into `functions` sorted by name; of equal names, the first in `.symtab`.
    functions_by_name: Box<[u32]>,
    /// Sorted by name; of equal names, the last in `.symtab`.
    objects: Box<[ObjectSym]>,
}

impl SymbolIndex {
    /// Indexes `symbols` (STT_FUNC with a non-zero address: functions, STT_OBJECT: data), whose
    /// names are in `names`.
    pub fn new(symbols: &[Symbol], names: Option<SharedSlice>) -> SymbolIndex {
        let funcs: Vec<&Symbol> = symbols.iter().filter(|s| s.kind == object::elf::STT_FUNC && s.value != 0).collect();
        let size = |s: &Symbol| u32::try_from(s.size.max(1)).unwrap_or(u32::MAX);
        // Positions in `.symtab` order, then sorted both ways (the names compared are the
        // reader's own copies, dropped after analysis).
        let mut by_address: Vec<u32> = (0..funcs.len() as u32).collect();
        by_address.sort_by(|&a, &b| {
            let (a, b) = (funcs[a as usize], funcs[b as usize]);
            (a.value, size(a)).cmp(&(b.value, size(b))).then_with(|| a.name.cmp(&b.name))
        });
        let mut by_name: Vec<u32> = (0..funcs.len() as u32).collect();
        by_name.sort_by(|&a, &b| funcs[a as usize].name.cmp(&funcs[b as usize].name).then(a.cmp(&b)));
        by_name.dedup_by(|later, first| funcs[*later as usize].name == funcs[*first as usize].name);
        let mut rank = vec![0u32; funcs.len()];
        for (rank_of, &position) in by_address.iter().enumerate() {
            rank[position as usize] = rank_of as u32;
        }
        let functions = by_address
            .iter()
            .map(|&p| {
                let s = funcs[p as usize];
                FunctionSym { entry: s.value, size: size(s), name: s.name_offset }
            })
            .collect();
        let functions_by_name = by_name.iter().map(|&p| rank[p as usize]).collect();

        let mut objects: Vec<(usize, &Symbol)> =
            symbols.iter().filter(|s| s.kind == object::elf::STT_OBJECT && s.value != 0).enumerate().collect();
        // Later definitions win, as inserting them into a map in order would.
        objects.sort_by(|(a, sa), (b, sb)| sa.name.cmp(&sb.name).then(b.cmp(a)));
        objects.dedup_by(|later, first| later.1.name == first.1.name);
        let objects = objects.iter().map(|(_, s)| ObjectSym { address: s.value, name: s.name_offset }).collect();
        SymbolIndex { names, functions, functions_by_name, objects }
    }

    fn name(&self, offset: u32) -> Option<&str> {
        cstr(self.names.as_deref()?, offset as usize)
    }

    /// The function with this exact name, as (entry, end).
    pub fn function(&self, name: &str) -> Option<(u64, u64)> {
        let i = self.functions_by_name.partition_point(|&i| self.compare_function(i, name) == Ordering::Less);
        let &found = self.functions_by_name.get(i)?;
        let f = self.functions[found as usize];
        (self.name(f.name) == Some(name)).then(|| (f.entry, f.end()))
    }

    fn compare_function(&self, i: u32, name: &str) -> Ordering {
        self.name(self.functions[i as usize].name).unwrap_or("").cmp(name)
    }

    /// The function whose range holds `pc` (the last by entry that starts at or before it), as
    /// (entry, end, name).
    pub fn function_at(&self, pc: u64) -> Option<(u64, u64, String)> {
        let i = self.functions.partition_point(|f| f.entry <= pc).checked_sub(1)?;
        let f = self.functions[i];
        let name = self.names.as_deref().and_then(|n| cstr_lossy(n, f.name as usize))?;
        (pc < f.end()).then_some((f.entry, f.end(), name))
    }

    /// The address of the data object with this exact name.
    pub fn object(&self, name: &str) -> Option<u64> {
        let i = self.objects.partition_point(|o| self.name(o.name).unwrap_or("") < name);
        let o = self.objects.get(i)?;
        (self.name(o.name) == Some(name)).then_some(o.address)
    }

    /// Whether a function of this name is in `.symtab`.
    pub fn has_function(&self, name: &str) -> bool {
        self.function(name).is_some()
    }
}

/// `.gopclntab`'s functions by name: their indexes sorted by name (of equal names, the first: an
/// assembly function appears twice, ABI0 body and ABIInternal wrapper).
#[derive(Clone)]
pub(crate) struct PclnNames(Box<[u32]>);

impl PclnNames {
    /// Indexes every function [`Pclntab::functions`] yields.
    pub fn new(pcln: &Pclntab) -> PclnNames {
        // Sorted as (name, index) pairs borrowing the table, then only the indexes kept.
        let mut functions: Vec<(&str, u32)> = pcln.indexed_functions().map(|(i, name, ..)| (name, i as u32)).collect();
        functions.sort_unstable();
        functions.dedup_by(|later, first| later.0 == first.0);
        PclnNames(functions.iter().map(|&(_, i)| i).collect())
    }

    /// The function with this exact name, as (entry, end).
    pub fn function(&self, pcln: &Pclntab, name: &str) -> Option<(u64, u64)> {
        let name_of = |i: u32| pcln.func(i as usize).and_then(|f| pcln.name(&f)).unwrap_or("");
        let at = self.0.partition_point(|&i| name_of(i) < name);
        let &i = self.0.get(at)?;
        (name_of(i) == name).then(|| Some((pcln.entry(i as usize)?, pcln.end(i as usize)?))).flatten()
    }
}

/// The NUL-terminated UTF-8 string at `offset` of `table`.
fn cstr(table: &[u8], offset: usize) -> Option<&str> {
    std::str::from_utf8(cstr_bytes(table, offset)?).ok()
}

/// As [`cstr`], with invalid UTF-8 replaced (as the symbol reader names symbols).
fn cstr_lossy(table: &[u8], offset: usize) -> Option<String> {
    Some(String::from_utf8_lossy(cstr_bytes(table, offset)?).into_owned())
}

fn cstr_bytes(table: &[u8], offset: usize) -> Option<&[u8]> {
    let rest = table.get(offset..)?;
    let rest = &rest[..rest.len().min(MAX_NAME)];
    Some(&rest[..rest.iter().position(|&b| b == 0)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol(names: &mut Vec<u8>, name: &str, value: u64, size: u64, kind: u8) -> Symbol {
        let name_offset = names.len() as u32;
        names.extend_from_slice(name.as_bytes());
        names.push(0);
        Symbol { name: name.into(), name_offset, value, size, kind }
    }

    #[test]
    fn functions_by_name_and_address_objects_by_name() {
        let mut names = vec![0u8];
        let f = object::elf::STT_FUNC;
        let o = object::elf::STT_OBJECT;
        let symbols = vec![
            symbol(&mut names, "main.b", 0x2000, 0x10, f),
            symbol(&mut names, "main.a", 0x1000, 0x20, f),
            symbol(&mut names, "main.a", 0x3000, 0x20, f),
            symbol(&mut names, "runtime.allgs", 0x9000, 8, o),
            symbol(&mut names, "runtime.allgs", 0x9100, 8, o),
            symbol(&mut names, "zero", 0, 8, f),
        ];
        let index = SymbolIndex::new(&symbols, Some(SharedSlice::owned(names)));
        assert_eq!(index.function("main.a"), Some((0x1000, 0x1020)), "the first of equal names");
        assert_eq!(index.function("main.b"), Some((0x2000, 0x2010)));
        assert_eq!(index.function("main.c"), None);
        assert_eq!(index.function("zero"), None, "address 0 is not a function");
        assert_eq!(index.function_at(0x2008), Some((0x2000, 0x2010, "main.b".into())));
        assert_eq!(index.function_at(0x2010), None, "past the end");
        assert_eq!(index.function_at(0x3000).map(|f| f.0), Some(0x3000));
        assert_eq!(index.object("runtime.allgs"), Some(0x9100), "the last of equal names");
        assert_eq!(index.object("runtime.allglen"), None);
    }

    #[test]
    fn no_symbol_table() {
        let index = SymbolIndex::new(&[], None);
        assert_eq!(index.function("main.main"), None);
        assert_eq!(index.function_at(0x1000), None);
        assert_eq!(index.object("runtime.allgs"), None);
    }
}
