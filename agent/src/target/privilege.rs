//! The Linux capabilities goscope needs, and naming the one that is missing when the kernel says
//! no. An `EPERM` from `bpf()` or `perf_event_open()` tells nothing about which privilege was
//! lacking; this process's effective set (`CapEff` in `/proc/self/status`) does.
//!
//! Measured on kernel 6.18 as a non-root user holding only chosen capabilities (the
//! `least_privilege` test keeps it true): loading the programs and creating their maps needs
//! `CAP_BPF` and `CAP_PERFMON` (uprobe programs are tracing programs); reading another user's
//! `/proc/PID/exe`, `/proc/PID/maps` and memory needs `CAP_SYS_PTRACE`. Attaching needs
//! `CAP_PERFMON` (and `CAP_SYS_PTRACE`, for the `/proc/PID/exe` path) through a `uprobe_multi`
//! BPF link, but `CAP_SYS_ADMIN` through a perf event of the uprobe PMU (`CAP_PERFMON` is not
//! enough there). `CAP_SYS_ADMIN` also stands in for `CAP_BPF` and `CAP_PERFMON`, as on kernels
//! before 5.8, which have neither.
use std::{error::Error as StdError, fmt, fs, io};

/// A capability goscope may need (numbers from `linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    SysPtrace,
    SysAdmin,
    Perfmon,
    Bpf,
}

impl Capability {
    fn bit(self) -> u32 {
        match self {
            Self::SysPtrace => 19,
            Self::SysAdmin => 21,
            Self::Perfmon => 38,
            Self::Bpf => 39,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::SysPtrace => "CAP_SYS_PTRACE",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What goscope does that takes privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create the maps and load the uprobe programs.
    LoadEbpf,
    /// Attach uprobes through `uprobe_multi` BPF links (the executable reached through
    /// `/proc/PID/exe`).
    AttachUprobeLinks,
    /// Attach uprobes through perf events of the uprobe PMU.
    AttachPerfUprobes,
    /// Read `/proc/PID/{exe,maps,mem}` of a process of another user.
    ReadProcess,
}

impl Operation {
    pub fn needs(self) -> &'static [Capability] {
        match self {
            Self::LoadEbpf => &[Capability::Bpf, Capability::Perfmon],
            Self::AttachUprobeLinks => &[Capability::Perfmon, Capability::SysPtrace],
            Self::AttachPerfUprobes => &[Capability::SysAdmin, Capability::SysPtrace],
            Self::ReadProcess => &[Capability::SysPtrace],
        }
    }
}

/// A set of capabilities, as the kernel prints it in `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilitySet(u64);

impl CapabilitySet {
    /// This process's effective set; `None` if `/proc/self/status` cannot be read.
    pub fn effective() -> Option<Self> {
        Self::parse_status(&fs::read_to_string("/proc/self/status").ok()?)
    }

    /// The `CapEff:` line of a `/proc/PID/status` text.
    fn parse_status(status: &str) -> Option<Self> {
        let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
        u64::from_str_radix(hex, 16).ok().map(Self)
    }

    fn holds(self, cap: Capability) -> bool {
        self.0 & (1 << cap.bit()) != 0
    }

    /// Whether the kernel grants what `cap` guards: `CAP_SYS_ADMIN` also passes the kernel's
    /// `bpf_capable()` and `perfmon_capable()` checks.
    fn grants(self, cap: Capability) -> bool {
        self.holds(cap) || (matches!(cap, Capability::Bpf | Capability::Perfmon) && self.holds(Capability::SysAdmin))
    }

    /// The capabilities `op` needs that this set does not grant.
    pub fn lacking(self, op: Operation) -> Vec<Capability> {
        op.needs().iter().copied().filter(|c| !self.grants(*c)).collect()
    }
}

/// Whether `err` or one of its sources is the kernel refusing for lack of privilege (`EPERM`,
/// `EACCES`).
pub fn is_permission_denied(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && (matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES)) || io.kind() == io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Why `op` was refused, for an error message: the capabilities this process lacks, or, when it
/// holds them all, what else refuses (a seccomp profile, an LSM). `None` when `err` is not a
/// refusal for lack of privilege.
pub fn explain_refusal(op: Operation, err: &(dyn StdError + 'static)) -> Option<String> {
    if !is_permission_denied(err) {
        return None;
    }
    Some(explain_with(op, CapabilitySet::effective()))
}

/// What to tell a user whose `op` failed with `err`: [`explain_refusal`], or else the
/// capabilities `op` needs, as a reminder.
pub fn hint(op: Operation, err: &(dyn StdError + 'static)) -> String {
    explain_refusal(op, err).unwrap_or_else(|| format!("goscope needs root or {}", join(op.needs())))
}

fn explain_with(op: Operation, effective: Option<CapabilitySet>) -> String {
    let needed = join(op.needs());
    let Some(effective) = effective else {
        return format!("the kernel refused: goscope needs {needed} (or root)");
    };
    let lacking = effective.lacking(op);
    if lacking.is_empty() {
        format!(
            "the kernel refused although goscope holds {needed}: a seccomp profile (one that allows bpf and \
             perf_event_open only with CAP_SYS_ADMIN) or a security module (SELinux, AppArmor, lockdown) refuses it"
        )
    } else {
        format!("goscope lacks {} (it needs {needed}; run as root or grant them)", join(&lacking))
    }
}

fn join(caps: &[Capability]) -> String {
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = "000001ffffffffff";

    fn set(hex: &str) -> CapabilitySet {
        CapabilitySet::parse_status(&format!("Name:\tgoscope\nCapInh:\t0\nCapEff:\t{hex}\nCapBnd:\t{ALL}\n")).unwrap()
    }

    #[test]
    fn reads_the_effective_set() {
        assert_eq!(set(ALL), CapabilitySet(0x1ff_ffff_ffff));
        assert!(CapabilitySet::parse_status("Name:\tx\n").is_none());
        assert!(CapabilitySet::effective().is_some());
    }

    #[test]
    fn names_each_missing_capability() {
        let bpf_perfmon_ptrace = (1u64 << 39) | (1 << 38) | (1 << 19);
        let full = CapabilitySet(bpf_perfmon_ptrace);
        for op in [Operation::LoadEbpf, Operation::AttachUprobeLinks, Operation::ReadProcess] {
            assert!(full.lacking(op).is_empty(), "{op:?}");
        }
        assert_eq!(CapabilitySet(bpf_perfmon_ptrace & !(1 << 39)).lacking(Operation::LoadEbpf), [Capability::Bpf]);
        assert_eq!(CapabilitySet(bpf_perfmon_ptrace & !(1 << 38)).lacking(Operation::AttachUprobeLinks), [Capability::Perfmon]);
        assert_eq!(full.lacking(Operation::AttachPerfUprobes), [Capability::SysAdmin]);
        assert_eq!(CapabilitySet(bpf_perfmon_ptrace & !(1 << 19)).lacking(Operation::ReadProcess), [Capability::SysPtrace]);
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_only() {
        let admin = CapabilitySet(1 << 21);
        assert!(admin.lacking(Operation::LoadEbpf).is_empty());
        assert_eq!(admin.lacking(Operation::ReadProcess), [Capability::SysPtrace]);
    }

    #[test]
    fn only_permission_errors_are_explained() {
        let denied = io::Error::from_raw_os_error(libc::EPERM);
        let explained = explain_refusal(Operation::ReadProcess, &denied);
        assert!(explained.is_some());
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        assert!(explain_refusal(Operation::ReadProcess, &missing).is_none());
    }

    #[test]
    fn explanation_names_the_lacking_capability_or_another_cause() {
        let msg = explain_with(Operation::LoadEbpf, Some(CapabilitySet(1 << 38)));
        assert!(msg.contains("lacks CAP_BPF") && !msg.contains("lacks CAP_BPF + CAP_PERFMON"), "{msg}");
        let msg = explain_with(Operation::LoadEbpf, Some(CapabilitySet((1 << 38) | (1 << 39))));
        assert!(msg.contains("seccomp"), "{msg}");
    }
}
