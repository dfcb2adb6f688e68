//! Where the uprobes go: a site per probe kind (goroutine creation, park, ready, exit, semaphore
//! acquire), at an instruction the kernel emulates where one fits, and the coroutine exit.
use crate::{
    BodyFn, CREATION_CALLERS, ProbeKind, ProbeSite, ReturnAddressAt,
    elf::Elf,
    probes::{self},
};

/// The probe sites of an amd64 Go 1.`minor` binary. A probe that cannot be placed is a reason
/// the binary is not supported; what is placed less well than usual is a note.
pub(crate) fn place(
    elf: &Elf<'_>,
    body: &BodyFn<'_, '_>,
    minor: u32,
    notes: &mut Vec<String>,
    reasons: &mut Vec<String>,
) -> Vec<ProbeSite> {
    let mut probe_sites = Vec::new();
    for kind in ProbeKind::ALL {
        let name = kind.function();
        let Some((entry, code)) = body(name) else {
            reasons.push(format!("missing symbol {name}: not in .symtab or .gopclntab"));
            continue;
        };
        let mk = |offset: u64, instruction: String, why: String, return_address| -> Option<ProbeSite> {
            let address = entry.checked_add(offset)?;
            Some(ProbeSite {
                probe: kind,
                symbol: name.to_string(),
                offset,
                address,
                file_offset: elf.file_offset(address)?,
                instruction,
                why,
                return_address,
                value_register: None,
            })
        };
        if kind == ProbeKind::GoroutineCreated {
            match creation_sites(body, entry, elf) {
                Ok(sites) => {
                    probe_sites.extend(sites);
                    continue;
                }
                Err(why) => notes.push(format!("goroutine creation probed at the RETs of {name} (single-stepped): {why}")),
            }
            let rets = probes::find_rets(code, entry);
            if rets.is_empty() {
                reasons.push(format!("no RET instruction found in {name}"));
            }
            for (off, text) in rets {
                let why = format!(
                    "RET at {name}+{off}: RAX holds the returned *g of the new goroutine here; RET is \
                     single-stepped (~5 us) but goroutine creation is rare; one probe per RET because \
                     uretprobes crash Go programs"
                );
                match mk(off, text, why, ReturnAddressAt::Unknown) {
                    Some(s) => probe_sites.push(ProbeSite { value_register: Some(0), ..s }),
                    None => reasons.push(format!("{name}+{off} is not file-backed")),
                }
            }
        } else {
            let site = probes::place_entry(name, code, entry, kind.arg_count(minor));
            match mk(site.offset, site.instruction, site.why, site.return_address) {
                Some(s) => probe_sites.push(s),
                None => reasons.push(format!("{name}+{} is not file-backed", site.offset)),
            }
        }
    }
    // A coroutine (iter.Pull, Go >= 1.23) never reaches goexit1: it ends in coroexit, inlined
    // into corostart's deferred wrapper, which switches away and destroys the goroutine. That
    // wrapper runs once, on the coroutine's own stack (R14 = its g): its entry is the exit.
    if let Some((entry, code)) = body(probes::COROUTINE_EXIT) {
        let site = probes::place_entry(probes::COROUTINE_EXIT, code, entry, Some(0));
        let address = entry + site.offset;
        match elf.file_offset(address) {
            Some(file_offset) => probe_sites.push(ProbeSite {
                probe: ProbeKind::GoroutineExited,
                symbol: probes::COROUTINE_EXIT.to_string(),
                offset: site.offset,
                address,
                file_offset,
                instruction: site.instruction,
                why: format!("coroutine exit (iter.Pull): {}", site.why),
                return_address: site.return_address,
                value_register: None,
            }),
            None => reasons.push(format!("{}+{} is not file-backed", probes::COROUTINE_EXIT, site.offset)),
        }
    } else if body("runtime.corostart").is_some() {
        notes.push(format!("no {}: exits of coroutines (iter.Pull) are not seen", probes::COROUTINE_EXIT));
    }
    probe_sites
}

/// The goroutine creation probe at a kernel-emulated instruction after `runtime.newproc1`
/// returns, in each of [`CREATION_CALLERS`] the binary has (`newproc`'s closure is
/// required). Err: why not, and the caller falls back to newproc1's RETs.
fn creation_sites(body: &BodyFn<'_, '_>, newproc1: u64, elf: &Elf<'_>) -> Result<Vec<ProbeSite>, String> {
    let mut sites = Vec::new();
    for (n, caller) in CREATION_CALLERS.iter().enumerate() {
        let Some((entry, code)) = body(caller) else {
            if n == 0 {
                return Err(format!("no {caller}"));
            }
            continue;
        };
        for found in probes::place_after_calls(caller, code, entry, newproc1)? {
            let address = entry + found.site.offset;
            let file_offset =
                elf.file_offset(address).ok_or_else(|| format!("{caller}+{} is not file-backed", found.site.offset))?;
            sites.push(ProbeSite {
                probe: ProbeKind::GoroutineCreated,
                symbol: caller.to_string(),
                offset: found.site.offset,
                address,
                file_offset,
                instruction: found.site.instruction,
                why: found.site.why,
                return_address: found.site.return_address,
                value_register: Some(found.register),
            });
        }
    }
    Ok(sites)
}
