//! What the runtime looks like inside: the wait-reason names (from the binary, else the release's
//! table) and the struct layout goscope reads (from DWARF, else the release's table, checked
//! against the runtime's code).
use crate::{Arch, BodyFn, GoVersion, InspectError, NEWEST_MINOR, OffsetsSource, RuntimeLayout, WaitReasonTable, elf::Elf};

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
    let minor = go_version.minor;
    let known = minor <= NEWEST_MINOR;
    // --- Wait reasons (read before the layout: used to validate an unknown version's layout).
    let table = crate::layout::table(minor.min(NEWEST_MINOR));
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
            if let Some(t) = table.as_ref().filter(|_| known)
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
    let wait_reasons = match from_binary {
        Some(names) => WaitReasonTable::new(names, "binary"),
        None => match table.as_ref().filter(|_| known) {
            Some(t) => {
                notes.push(format!("wait reasons not found in the binary; using the go1.{} table", t.minor));
                WaitReasonTable::new(t.wait_reasons.clone(), "table")
            }
            None => {
                reasons.push("wait reason table not found in the binary and no table for this version".into());
                WaitReasonTable::new(Vec::new(), "table")
            }
        },
    };

    // --- Layout.
    let dwarf_entries = match crate::dwarf::read_structs(elf) {
        Ok(Some(structs)) => Some(crate::layout::entries_from_dwarf(&structs)),
        Ok(None) => None,
        Err(e) => {
            notes.push(format!("DWARF unusable ({e}); using offsets table"));
            None
        }
    };
    let (layout, offsets_source) = match dwarf_entries.map(|e| RuntimeLayout::from_entries(&e)) {
        Some(Ok(l)) => (l, OffsetsSource::Dwarf),
        other => {
            if let Some(Err(k)) = other {
                notes.push(format!("DWARF lacks {k}; using offsets table"));
            }
            let t = table.as_ref().ok_or_else(|| InspectError::UnsupportedGoVersion {
                version: go_version.raw.clone(),
                reason: "no offsets table for this version and no DWARF".into(),
            })?;
            let l = RuntimeLayout::from_entries(&t.entries)
                .map_err(|k| InspectError::malformed(format!("built-in go1.{} table lacks {k}", t.minor)))?;
            if !known {
                // Newer than any table: accept the newest layout only if the binary agrees.
                let check = crate::validate_newer(arch, &l, t, &wait_reasons, body);
                if let Err(why) = check {
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
            (l, OffsetsSource::Table)
        }
    };
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
