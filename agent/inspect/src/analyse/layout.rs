//! What the runtime looks like inside: the wait-reason names (from the binary, else the release's
//! table) and the struct layout goscope reads (from DWARF, else the release's table, checked
//! against the runtime's code).
use crate::{
    Arch, BodyFn, GoVersion, InspectError, NEWEST_MINOR, OffsetsSource, RuntimeLayout, WaitReasonTable, elf::Elf, layout::Table,
};

/// The runtime's wait reasons and layout.
pub(crate) struct Runtime {
    pub wait_reasons: WaitReasonTable,
    pub layout: RuntimeLayout,
    pub offsets_source: OffsetsSource,
}

/// Reads the wait reasons (first: they validate the layout of a release newer than the tables),
/// then the layout. What limits support goes to `reasons`, what is worth knowing to `notes`.
pub(crate) fn read_runtime(
    elf: &Elf<'_>,
    arch: Arch,
    go_version: &GoVersion,
    body: &BodyFn<'_, '_>,
    notes: &mut Vec<String>,
    reasons: &mut Vec<String>,
) -> Result<Runtime, InspectError> {
    let known = go_version.minor <= NEWEST_MINOR;
    let table = crate::layout::table(go_version.minor.min(NEWEST_MINOR));
    let measured = table.as_ref().filter(|_| known);
    let wait_reasons = wait_reasons(elf, arch, measured, body, notes, reasons);
    let (layout, offsets_source) = layout(elf, arch, go_version, table.as_ref(), &wait_reasons, body, notes)?;
    if arch == Arch::Amd64
        && let Err(why) = crate::validate_code(&layout, body)
    {
        if offsets_source == OffsetsSource::Table || !known {
            reasons.push(format!("layout does not match the runtime code: {why}"));
        } else {
            notes.push(format!("layout cross-check: {why}"));
        }
    }
    Ok(Runtime { wait_reasons, layout, offsets_source })
}

/// The wait-reason names: the binary's own array (by symbol, from `waitReason.String`'s code, or
/// by a data scan), else `measured`, the table of the binary's release when there is one.
fn wait_reasons(
    elf: &Elf<'_>,
    arch: Arch,
    measured: Option<&Table>,
    body: &BodyFn<'_, '_>,
    notes: &mut Vec<String>,
    reasons: &mut Vec<String>,
) -> WaitReasonTable {
    let from_binary = elf
        .symbol("runtime.waitReasonStrings")
        .and_then(|s| crate::waitreason::read_at(elf, s.value, (s.size / 16) as usize))
        .or_else(|| {
            if arch != Arch::Amd64 {
                return None;
            }
            let (entry, code) = body("runtime.waitReason.String")?;
            crate::waitreason::from_string_method(elf, entry, code)
        })
        .or_else(|| {
            // Last resort: the data scan cannot see where the array ends and may run into a
            // following string variable; cut it to the version's table when it extends it.
            let (_, mut names) = crate::waitreason::scan(elf)?;
            if let Some(t) = measured
                && names.len() > t.wait_reasons.len()
                && names[..t.wait_reasons.len()] == t.wait_reasons[..]
            {
                notes.push(format!(
                    "wait reason scan found {} entries; cut to the {} of the go1.{} table",
                    names.len(),
                    t.wait_reasons.len(),
                    t.minor
                ));
                names.truncate(t.wait_reasons.len());
            }
            Some(names)
        });
    match from_binary {
        Some(names) => WaitReasonTable::new(names, "binary"),
        None => match measured {
            Some(t) => {
                notes.push(format!("wait reasons not found in the binary; using the go1.{} table", t.minor));
                WaitReasonTable::new(t.wait_reasons.clone(), "table")
            }
            None => {
                reasons.push("wait reason table not found in the binary and no table for this version".into());
                WaitReasonTable::new(Vec::new(), "table")
            }
        },
    }
}

/// The struct layout: from DWARF, else from `table` (the newest one for a release past the
/// tables, accepted only if the binary's code agrees with it).
fn layout(
    elf: &Elf<'_>,
    arch: Arch,
    go_version: &GoVersion,
    table: Option<&Table>,
    wait_reasons: &WaitReasonTable,
    body: &BodyFn<'_, '_>,
    notes: &mut Vec<String>,
) -> Result<(RuntimeLayout, OffsetsSource), InspectError> {
    let minor = go_version.minor;
    let dwarf_entries = match crate::dwarf::read_structs(elf) {
        Ok(Some(structs)) => Some(crate::layout::entries_from_dwarf(&structs)),
        Ok(None) => None,
        Err(e) => {
            notes.push(format!("DWARF unusable ({e}); using offsets table"));
            None
        }
    };
    match dwarf_entries.map(|e| RuntimeLayout::from_entries(&e)) {
        Some(Ok(l)) => return Ok((l, OffsetsSource::Dwarf)),
        Some(Err(k)) => notes.push(format!("DWARF lacks {k}; using offsets table")),
        None => {}
    }
    let t = table.ok_or_else(|| InspectError::UnsupportedGoVersion {
        version: go_version.raw.clone(),
        reason: "no offsets table for this version and no DWARF".into(),
    })?;
    let l = RuntimeLayout::from_entries(&t.entries)
        .map_err(|k| InspectError::malformed(format!("built-in go1.{} table lacks {k}", t.minor)))?;
    if minor > NEWEST_MINOR {
        // Newer than any table: accept the newest layout only if the binary agrees.
        if let Err(why) = crate::validate_newer(arch, &l, t, wait_reasons, body) {
            return Err(InspectError::UnsupportedGoVersion {
                version: go_version.raw.clone(),
                reason: format!(
                    "no DWARF and no offsets table for go1.{minor}; the newest known layout (go1.{}) does not match this binary: {why}; rebuild without -w or update goscope",
                    t.minor
                ),
            });
        }
        notes.push(format!(
            "go1.{minor} is newer than the newest table; using the go1.{} layout, validated against the binary",
            t.minor
        ));
    }
    Ok((l, OffsetsSource::Table))
}
