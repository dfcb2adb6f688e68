//! Kubernetes identity without an API server: a fixture process put in a cgroup named the way the
//! kubelet names one (`kubepods/besteffort/pod<UID>/<container ID>`, cgroupfs driver) and given
//! the downward-API variables, watched by `goscope attach` exporting to a real Jaeger. Its spans'
//! resource carries `k8s.pod.uid` and `container.id` from the cgroup and `k8s.pod.name` /
//! `k8s.namespace.name` from the variables; nothing else of its environment or command line.
use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, ensure};
use goscope_tests::backend::{Jaeger, process_tag};
use goscope_tests::{ChildGuard, GoFixture, Goscope, Variant, require_bpf};
use serde_json::Value;

const POD_UID: &str = "3f2b7c1e-5d4a-4e8f-9b0c-1a2b3c4d5e6f";

/// A cgroup under the v1 `pids` hierarchy (or the v2 root), removed on drop once empty.
struct KubeletCgroup {
    dirs: Vec<PathBuf>,
}

impl KubeletCgroup {
    fn create(container_id: &str) -> Result<KubeletCgroup> {
        let root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists())
            .context("no writable cgroup hierarchy")?;
        let mut dirs = Vec::new();
        let mut dir = root;
        for part in ["kubepods", "besteffort", &format!("pod{POD_UID}"), container_id] {
            dir = dir.join(part);
            if !dir.exists() {
                fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
                dirs.push(dir.clone());
            }
        }
        Ok(KubeletCgroup { dirs })
    }

    fn add(&self, pid: u32) -> Result<()> {
        let leaf = self.dirs.last().context("no cgroup created")?;
        fs::write(leaf.join("cgroup.procs"), pid.to_string()).with_context(|| format!("moving {pid} into {}", leaf.display()))
    }
}

impl Drop for KubeletCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            // Empty once the fixture is gone; retry briefly while its exit is reaped.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn pod_identity_from_cgroup_and_downward_api_and_nothing_else() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let container_id = "c0ffee".repeat(10) + "abcd";
    let jaeger = Jaeger::start()?;
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut cmd = fixture.command(&["--db-password=s3cret-arg"]);
    cmd.env("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        .env("POD_NAME", "shop-7d9f")
        .env("POD_NAMESPACE", "prod")
        .env("DB_PASSWORD", "s3cret-env");
    let mut target = ChildGuard::spawn(fixture.label(), cmd)?;
    target.expect_json("deadlocked", Duration::from_secs(30))?;
    let cgroup = KubeletCgroup::create(&container_id)?;
    cgroup.add(target.pid())?;

    let service = "k8s-identity";
    let endpoint = jaeger.otlp_grpc_endpoint();
    let args = ["--no-events", "--block-threshold", "1s", "--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc"];
    let mut goscope = Goscope::attach(
        target.pid(),
        &[&args[..], &["--otlp-service-name", service, "--otlp-export-interval", "500ms"]].concat(),
    )?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let spans = jaeger.wait_spans(service, Duration::from_secs(60), |s| !s.is_empty())?;
    goscope.stop(Duration::from_secs(30))?;
    target.kill();
    drop(cgroup);

    let span = &spans[0];
    let tag = |k: &str| process_tag(span, k).and_then(Value::as_str).map(str::to_owned);
    ensure!(tag("k8s.pod.uid").as_deref() == Some(POD_UID), "k8s.pod.uid: {span}");
    ensure!(tag("container.id").as_deref() == Some(container_id.as_str()), "container.id: {span}");
    ensure!(tag("k8s.pod.name").as_deref() == Some("shop-7d9f"), "k8s.pod.name: {span}");
    ensure!(tag("k8s.namespace.name").as_deref() == Some("prod"), "k8s.namespace.name: {span}");
    let process = span["process"].to_string();
    ensure!(!process.contains("s3cret"), "a secret of the target's environment or command line exported: {process}");
    ensure!(process_tag(span, "process.command_args").is_none(), "command line exported by default: {process}");
    Ok(())
}
