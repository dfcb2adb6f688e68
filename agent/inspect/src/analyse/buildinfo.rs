//! The first step: is it Go, which release, which architecture (from `.go.buildinfo`, the Go
//! build id note and the ELF header), before any code is read.
use crate::{Arch, GoVersion, InspectError, OLDEST_MINOR, buildinfo::ModInfo, elf::Elf};

/// What identifies a Go binary.
pub(crate) struct Identity {
    pub go_version: GoVersion,
    pub modinfo: ModInfo,
    pub arch: Arch,
    pub build_id: Option<String>,
}

/// Identifies the binary; errors for what goscope cannot analyse at all (not Go, too old, an
/// architecture without support).
pub(crate) fn identify(elf: &Elf<'_>) -> Result<Identity, InspectError> {
    let blob = crate::buildinfo::find_buildinfo(elf);
    let build_id = crate::buildinfo::go_build_id(elf);
    let Some(blob) = blob else {
        if build_id.is_some() {
            return Err(InspectError::malformed(
                "Go build id note present but no .go.buildinfo: cannot determine the Go version (pre-1.13 or damaged binary)",
            ));
        }
        return Err(InspectError::NotGo);
    };
    let (version_raw, modinfo) = crate::buildinfo::parse_buildinfo_blob(blob)?;
    let go_version = GoVersion::parse(&version_raw).ok_or_else(|| InspectError::UnsupportedGoVersion {
        version: version_raw.clone(),
        reason: "cannot parse the toolchain version string".into(),
    })?;
    if go_version.major != 1 || go_version.minor < OLDEST_MINOR {
        return Err(InspectError::UnsupportedGoVersion {
            version: version_raw,
            reason: "goscope supports Go 1.19 and newer; rebuild the program with a newer toolchain".into(),
        });
    }
    let modinfo = crate::buildinfo::parse_modinfo(&modinfo);

    let arch = match elf.machine {
        object::elf::EM_X86_64 => Arch::Amd64,
        object::elf::EM_AARCH64 => Arch::Arm64,
        m => {
            return Err(InspectError::UnsupportedArch {
                arch: format!("ELF machine {m}"),
                reason: "goscope supports amd64 and arm64 Go binaries".into(),
            });
        }
    };
    Ok(Identity { go_version, modinfo, arch, build_id })
}
