//! Builds agent-ebpf's programs for the BPF target and leaves the object in OUT_DIR, where
//! `probes::loader` embeds it with `include_bytes_aligned!`.
// Linked only so cargo rebuilds the agent when the eBPF crate changes (see Cargo.toml).
use agent_ebpf as _;
use anyhow::{Context as _, anyhow};

/// The nightly pinned for the whole workspace (bpf-linker is built against its LLVM).
const PIN_FILE: &str = "../rust-nightly.toml";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed={PIN_FILE}");
    let pin = std::fs::read_to_string(PIN_FILE).with_context(|| format!("reading {PIN_FILE}"))?;
    // `channel = "nightly-…"` under [toolchain]; xtask's bootstrap reads the same line.
    let toolchain = pin
        .lines()
        .filter_map(|l| l.trim().strip_prefix("channel")?.split('"').nth(1))
        .next()
        .ok_or_else(|| anyhow!("{PIN_FILE}: no `channel = \"…\"`"))?;
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "agent-ebpf")
        .ok_or_else(|| anyhow!("agent-ebpf package not found in the workspace"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() }],
        aya_build::Toolchain::Custom(toolchain),
    )
}
