//! Kubernetes identity on every finding of `goscope run`, against a real kube-apiserver (and
//! etcd) built from their module sources: a Deployment → ReplicaSet → Pod made through the API
//! as the controllers and a kubelet would, the fixture process put in a cgroup named as the
//! kubelet names a container's, and goscope given only the ClusterRole that
//! deploy/kubernetes/rbac.yaml ships. Without API access it falls back to the cgroup with one
//! warning.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use goscope_tests::kube::{AGENT_TOKEN, KubeCluster};
use goscope_tests::{GoFixture, Goscope, Variant, require_bpf};
use serde_json::{Value, json};

const NODE: &str = "node-a";
const CONTAINER_ID: &str = "4f9c2a7e1b3d5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd";

/// A cgroup named as the kubelet (cgroupfs driver) names a Burstable pod's container, in the
/// `pids` hierarchy on cgroup v1 or the unified one on v2; removed on drop once emptied.
struct KubeletCgroup {
    leaf: PathBuf,
}

impl KubeletCgroup {
    fn create(pod_uid: &str) -> Result<Self> {
        let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/pids")
        };
        let leaf = root.join("kubepods").join("burstable").join(format!("pod{pod_uid}")).join(CONTAINER_ID);
        fs::create_dir_all(&leaf).with_context(|| format!("creating {}", leaf.display()))?;
        Ok(Self { leaf })
    }

    fn enter(&self, pid: u32) -> Result<()> {
        fs::write(self.leaf.join("cgroup.procs"), pid.to_string()).context("moving the fixture into the pod's cgroup")
    }
}

impl Drop for KubeletCgroup {
    fn drop(&mut self) {
        // Leaf first; a cgroup is removed only once its processes are gone.
        for dir in self.leaf.ancestors().take(4) {
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The objects a Deployment's controllers and the kubelet would have made; the pod's UID.
fn make_workload(cluster: &KubeCluster) -> Result<String> {
    let labels = json!({"app": "shop-api"});
    let template = json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "api", "image": "example/api:1"}]}});
    let deployment = cluster.create(
        "/apis/apps/v1/namespaces/default/deployments",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop-api"},
            "spec": {"selector": {"matchLabels": labels}, "template": template}}),
    )?;
    let owner = |kind: &str, obj: &Value| json!([{"apiVersion": "apps/v1", "kind": kind, "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"], "controller": true}]);
    let replicaset = cluster.create(
        "/apis/apps/v1/namespaces/default/replicasets",
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "shop-api-7d9f", "ownerReferences": owner("Deployment", &deployment)},
            "spec": {"selector": {"matchLabels": labels}, "template": template}}),
    )?;
    let pod = cluster.create(
        "/api/v1/namespaces/default/pods",
        &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "shop-api-7d9f-x2k4p", "labels": labels, "ownerReferences": owner("ReplicaSet", &replicaset)},
            "spec": {"nodeName": NODE, "containers": [{"name": "api", "image": "example/api:1"}]}}),
    )?;
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "api", "containerID": format!("containerd://{CONTAINER_ID}"), "image": "example/api:1",
        "imageID": "example/api@sha256:0", "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
    cluster.call(
        "PATCH",
        "/api/v1/namespaces/default/pods/shop-api-7d9f-x2k4p/status",
        goscope_tests::kube::ADMIN_TOKEN,
        Some(("application/merge-patch+json", &status.to_string())),
    )?;
    Ok(pod["metadata"]["uid"].as_str().context("the pod has no uid")?.to_owned())
}

/// The ClusterRole of deploy/kubernetes/rbac.yaml, created as shipped and bound to the agent user.
fn grant_shipped_role(cluster: &KubeCluster) -> Result<()> {
    let manifest = fs::read_to_string(goscope_tests::workspace_root().join("deploy/kubernetes/rbac.yaml"))?;
    let role =
        manifest.split("\n---\n").find(|doc| doc.contains("kind: ClusterRole\n")).context("no ClusterRole in rbac.yaml")?;
    let created = cluster.create_yaml("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)?;
    cluster.bind_agent(created["metadata"]["name"].as_str().context("unnamed ClusterRole")?)
}

fn goscope_run(cluster: &KubeCluster, token: &str) -> Result<Goscope> {
    let token_file = cluster.token_file(token)?;
    let (server, ca) = (cluster.server.clone(), cluster.ca_file.to_string_lossy().into_owned());
    let token_file = token_file.to_string_lossy().into_owned();
    Goscope::run(&[
        "--match",
        "deadlocked",
        "--scan-every",
        "500ms",
        "--block-threshold",
        "1s",
        "--k8s-api-server",
        &server,
        "--k8s-token-file",
        &token_file,
        "--k8s-ca-file",
        &ca,
        "--k8s-node-name",
        NODE,
    ])
}

#[test]
fn findings_name_the_pod_container_node_and_workload() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let dir = goscope_tests::target_dir().join("k8s-identity").join(std::process::id().to_string());
    let cluster = KubeCluster::start(&dir)?;
    grant_shipped_role(&cluster)?;
    let pod_uid = make_workload(&cluster)?;
    let cgroup = KubeletCgroup::create(&pod_uid)?;
    // The fixture inherits this process's environment: none of the downward-API variables that
    // goscope reads from a target may come from the machine running the test.
    for var in ["POD_NAME", "POD_NAMESPACE", "POD_UID", "NODE_NAME", "CONTAINER_NAME"] {
        // SAFETY: this test binary runs this one test; no other thread reads the environment now.
        unsafe { std::env::remove_var(var) };
    }
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    cgroup.enter(target.pid())?;
    target.expect_json("deadlocked", Duration::from_secs(30))?;

    // `run --match deadlocked` may also find another test's fixture of the same name: the finding
    // about this pod's process is the one checked.
    let pid = target.pid();
    let ours = |v: &Value| v["kind"] == "finding" && v["pid"].as_u64() == Some(u64::from(pid));
    let mut goscope = goscope_run(&cluster, AGENT_TOKEN)?;
    let finding = goscope.events_until(ours, Duration::from_secs(60))?.pop().context("no finding")?;
    let expected = json!({
        "k8s.namespace.name": "default", "k8s.pod.name": "shop-api-7d9f-x2k4p", "k8s.pod.uid": pod_uid,
        "k8s.container.name": "api", "k8s.node.name": NODE,
        "k8s.replicaset.name": "shop-api-7d9f", "k8s.deployment.name": "shop-api",
    });
    ensure!(finding["k8s"] == expected, "finding k8s = {}, expected {expected}", finding["k8s"]);
    let attached = goscope.events().iter().find(|v| v["kind"] == "attached").context("no attached line")?;
    ensure!(attached["k8s"] == expected, "attached k8s = {}", attached["k8s"]);
    ensure!(
        !goscope
            .events()
            .iter()
            .any(|v| v["kind"] == "warning" && v["message"].as_str().is_some_and(|m| m.contains("Kubernetes"))),
        "a Kubernetes warning with a working API: {:?}",
        goscope.events()
    );
    goscope.stop(Duration::from_secs(30))?;

    // A user with no role: the pod UID from the cgroup, and one warning.
    let mut goscope = goscope_run(&cluster, "no-such-token-anyone-has")?;
    let finding = goscope.events_until(ours, Duration::from_secs(60))?.pop().context("no finding")?;
    let expected = json!({"k8s.pod.uid": pod_uid, "k8s.node.name": NODE});
    ensure!(finding["k8s"] == expected, "without API access: finding k8s = {}, expected {expected}", finding["k8s"]);
    goscope.stop(Duration::from_secs(30))?;
    let warnings: Vec<&Value> = goscope
        .events()
        .iter()
        .filter(|v| v["kind"] == "warning" && v["message"].as_str().is_some_and(|m| m.contains("Kubernetes")))
        .collect();
    ensure!(warnings.len() == 1, "expected one Kubernetes warning, got {warnings:?}");
    ensure!(warnings[0]["message"].as_str().is_some_and(|m| m.contains("401")), "the warning should say why: {warnings:?}");
    drop(target);
    drop(cgroup);
    Ok(())
}
