//! Struct member offsets of runtime types from DWARF (`DW_TAG_structure_type` "runtime.g" etc.).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use gimli::{AttributeValue, EndianSlice, LittleEndian, SectionId, UnitOffset};

use crate::elf::Elf;
use crate::error::{InspectError, Result};

type R<'a> = EndianSlice<'a, LittleEndian>;

/// Upper bound on the total size of inflated DWARF sections.
const MAX_DECOMPRESSED_TOTAL: u64 = 512 << 20;

/// Upper bound on DIEs visited (Go binaries have a few million at most).
const MAX_DIES: usize = 50_000_000;

/// Upper bound on the DIEs and unit headers read while following member types to a `vu` word
/// ([`find_vu`]), over all members: self-referential types would otherwise make the depth-limited
/// search exponential (a 700-byte input took 23 s). Go 1.20-1.27 binaries need < 500.
const MAX_VU_STEPS: usize = 100_000;

/// Type structs to collect.
pub(crate) const WANTED: &[&str] = &[
    "runtime.g",
    "runtime.gobuf",
    "runtime.m",
    "runtime.sudog",
    "runtime.hchan",
    "runtime.waitq",
    // Heap metadata and module ranges for reachability (goscope-memory's reach).
    "runtime.mheap",
    "runtime.heapArena",
    "runtime.mspan",
    "runtime.moduledata",
];

#[derive(Debug, Clone, Default)]
pub(crate) struct StructInfo {
    pub size: Option<u64>,
    /// member name -> (offset, offset of the "truth" word when the member is a {vp, vu} pair)
    pub members: BTreeMap<String, Member>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    pub offset: u64,
    /// Offset (from the member start) of a nested `vu` word (Go 1.26 maybeTraceablePtr/Chan).
    pub vu: Option<u64>,
}

/// Returns None if the binary has no DWARF; Err only for DWARF that is present but broken.
pub(crate) fn read_structs(elf: &Elf<'_>) -> Result<Option<HashMap<String, StructInfo>>> {
    let mut sections: HashMap<SectionId, Cow<'_, [u8]>> = HashMap::new();
    let mut budget = MAX_DECOMPRESSED_TOTAL;
    for id in [
        SectionId::DebugInfo,
        SectionId::DebugAbbrev,
        SectionId::DebugStr,
        SectionId::DebugStrOffsets,
        SectionId::DebugLineStr,
        SectionId::DebugAddr,
        // gimli's Unit::new reads the line program header and range/location bases.
        SectionId::DebugLine,
        SectionId::DebugRngLists,
        SectionId::DebugLocLists,
        SectionId::DebugRanges,
    ] {
        if let Some(d) = elf.debug_section(id.name(), &mut budget)? {
            sections.insert(id, d);
        }
    }
    if !sections.contains_key(&SectionId::DebugInfo) || !sections.contains_key(&SectionId::DebugAbbrev) {
        return Ok(None);
    }
    let dwarf = gimli::Dwarf::load(|id| -> std::result::Result<R<'_>, gimli::Error> {
        Ok(EndianSlice::new(sections.get(&id).map(|c| &c[..]).unwrap_or(&[]), LittleEndian))
    })
    .map_err(dw_err)?;

    let mut out: HashMap<String, StructInfo> = HashMap::new();
    let mut visited = 0usize;
    let mut vu_steps = MAX_VU_STEPS;
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(dw_err)? {
        let unit = dwarf.unit(header).map_err(dw_err)?;
        let mut cursor = unit.entries();
        // (struct name, collected info) of the struct whose members are being read.
        let mut current: Option<(String, isize, StructInfo)> = None;
        while let Some(entry) = cursor.next_dfs().map_err(dw_err)? {
            visited += 1;
            if visited > MAX_DIES {
                return Err(InspectError::malformed("DWARF has too many entries"));
            }
            let depth = entry.depth();
            if let Some((_, d, _)) = &current
                && depth <= *d
            {
                let (name, _, info) = current.take().unwrap_or_default();
                out.insert(name, info);
            }
            match entry.tag() {
                gimli::DW_TAG_structure_type => {
                    let Some(name) = attr_str(&dwarf, &unit, entry.attr_value(gimli::DW_AT_name)) else {
                        continue;
                    };
                    if WANTED.contains(&name.as_str()) && !out.contains_key(&name) {
                        let size = entry.attr_value(gimli::DW_AT_byte_size).and_then(|v| v.udata_value());
                        current = Some((name, depth, StructInfo { size, members: BTreeMap::new() }));
                    }
                }
                gimli::DW_TAG_member => {
                    let Some((_, d, info)) = current.as_mut() else {
                        continue;
                    };
                    if depth != *d + 1 {
                        continue;
                    }
                    let Some(name) = attr_str(&dwarf, &unit, entry.attr_value(gimli::DW_AT_name)) else {
                        continue;
                    };
                    let Some(offset) = entry.attr_value(gimli::DW_AT_data_member_location).and_then(|v| v.udata_value()) else {
                        continue;
                    };
                    let vu = entry.attr_value(gimli::DW_AT_type).and_then(|t| find_vu_ref(&dwarf, &unit, t, 0, &mut vu_steps));
                    info.members.insert(name, Member { offset, vu });
                }
                _ => {}
            }
        }
        if let Some((name, _, info)) = current.take() {
            out.insert(name, info);
        }
        if WANTED.iter().all(|w| out.contains_key(*w)) {
            break;
        }
    }
    Ok(Some(out))
}

/// [`find_vu`] for a type reference that may point into another unit (DW_FORM_ref_addr, which Go
/// uses for types).
fn find_vu_ref(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    ty: AttributeValue<R<'_>>,
    depth: u32,
    steps: &mut usize,
) -> Option<u64> {
    if depth > 4 {
        return None;
    }
    match ty {
        AttributeValue::UnitRef(off) => find_vu(dwarf, unit, off, depth, steps),
        AttributeValue::DebugInfoRef(goff) => {
            if let Some(off) = goff.to_unit_offset(&unit.header) {
                return find_vu(dwarf, unit, off, depth, steps);
            }
            let mut units = dwarf.units();
            while let Ok(Some(h)) = units.next() {
                *steps = steps.checked_sub(1)?;
                if let Some(off) = goff.to_unit_offset(&h) {
                    let other = dwarf.unit(h).ok()?;
                    return find_vu(dwarf, &other, off, depth, steps);
                }
            }
            None
        }
        _ => None,
    }
}

/// If the type at `off` is a struct containing (possibly through embedded structs) a member
/// named `vu`, its offset from the start of the type.
fn find_vu(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    off: UnitOffset,
    depth: u32,
    steps: &mut usize,
) -> Option<u64> {
    if depth > 4 {
        return None;
    }
    *steps = steps.checked_sub(1)?;
    let mut cursor = unit.entries_at_offset(off).ok()?;
    let entry = cursor.next_dfs().ok()??;
    match entry.tag() {
        gimli::DW_TAG_typedef => {
            let t = entry.attr_value(gimli::DW_AT_type)?;
            find_vu_ref(dwarf, unit, t, depth + 1, steps)
        }
        gimli::DW_TAG_structure_type => {
            let base = entry.depth();
            let mut members = Vec::new();
            while let Some(child) = cursor.next_dfs().ok()? {
                *steps = steps.checked_sub(1)?;
                if child.depth() <= base {
                    break;
                }
                if child.depth() != base + 1 || child.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let name = attr_str(dwarf, unit, child.attr_value(gimli::DW_AT_name));
                let moff = child.attr_value(gimli::DW_AT_data_member_location).and_then(|v| v.udata_value());
                let ty = child.attr_value(gimli::DW_AT_type);
                members.push((name, moff, ty));
            }
            for (name, moff, ty) in members {
                let Some(moff) = moff else { continue };
                if name.as_deref() == Some("vu") {
                    return Some(moff);
                }
                if let Some(ty) = ty
                    && let Some(inner) = find_vu_ref(dwarf, unit, ty, depth + 1, steps)
                {
                    return moff.checked_add(inner);
                }
            }
            None
        }
        _ => None,
    }
}

fn attr_str(dwarf: &gimli::Dwarf<R<'_>>, unit: &gimli::Unit<R<'_>>, v: Option<AttributeValue<R<'_>>>) -> Option<String> {
    let s = dwarf.attr_string(unit, v?).ok()?;
    Some(String::from_utf8_lossy(s.slice()).into_owned())
}

fn dw_err(e: gimli::Error) -> InspectError {
    InspectError::malformed(format!("DWARF: {e}"))
}
