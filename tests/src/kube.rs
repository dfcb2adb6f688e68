//! A real Kubernetes control plane for the identity tests: etcd and kube-apiserver built from their
//! module sources ([`crate::goprogram`]), run on loopback with a throwaway CA, token
//! authentication and RBAC. No kubelet or controllers: the tests create the objects a kubelet and
//! the controllers would (pods with container statuses, their ReplicaSet and Deployment) through
//! the API, with `curl`.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::backend::{TestCa, free_ports};
use crate::goprogram::{GoProgram, Replaces};
use crate::process::ChildGuard;

/// etcd at the version kube-apiserver 1.34 is built against.
pub const ETCD: GoProgram = GoProgram {
    name: "etcd",
    module: "go.etcd.io/etcd/server/v3",
    version: "v3.6.4",
    package: "go.etcd.io/etcd/server/v3",
    replaces: Replaces::LocalToPublished("v3.6.4"),
    prebuilt_env: "GOSCOPE_ETCD_BIN",
    build_tags: "",
};

/// kube-apiserver; Kubernetes' staging modules are published as v0.<minor>.<patch>.
pub const KUBE_APISERVER: GoProgram = GoProgram {
    name: "kube-apiserver",
    module: "k8s.io/kubernetes",
    version: "v1.34.2",
    package: "k8s.io/kubernetes/cmd/kube-apiserver",
    replaces: Replaces::LocalToPublished("v0.34.2"),
    prebuilt_env: "GOSCOPE_KUBE_APISERVER_BIN",
    build_tags: "",
};

/// The token of a cluster administrator (group system:masters).
pub const ADMIN_TOKEN: &str = "goscope-test-admin-token";
/// The token of the user `goscope-agent`, who has only what a ClusterRole binding gives it.
pub const AGENT_TOKEN: &str = "goscope-test-agent-token";
pub const AGENT_USER: &str = "goscope-agent";

/// etcd + kube-apiserver on loopback; both are killed on drop.
pub struct KubeCluster {
    pub server: String,
    /// The CA that signed the API server's certificate.
    pub ca_file: PathBuf,
    dir: PathBuf,
    _etcd: ChildGuard,
    apiserver: ChildGuard,
}

impl KubeCluster {
    /// Builds (first time) and starts both, and waits until the API server is ready.
    pub fn start(dir: &Path) -> Result<Self> {
        let (etcd_bin, apiserver_bin) = (ETCD.binary()?, KUBE_APISERVER.binary()?);
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        let ca = TestCa::create(&dir.join("ca"))?;
        let ports = free_ports(3)?;
        let (client, peer, secure) = (ports[0], ports[1], ports[2]);
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut etcd = Command::new(etcd_bin);
        etcd.args(["--name", "default", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")]);
        let etcd = ChildGuard::spawn("etcd", etcd)?;
        let tokens = dir.join("tokens.csv");
        fs::write(&tokens, format!("{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n{AGENT_TOKEN},{AGENT_USER},agent-uid\n"))?;
        let key = ca.server_key.to_string_lossy().into_owned();
        let mut apiserver = Command::new(apiserver_bin);
        apiserver
            .args(["--etcd-servers", &etcd_url, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args(["--secure-port", &secure.to_string()])
            .arg("--tls-cert-file")
            .arg(&ca.server_cert)
            .args(["--tls-private-key-file", &key])
            .arg("--token-auth-file")
            .arg(&tokens)
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-account-issuer", "https://kubernetes.default.svc.cluster.local"])
            .args(["--service-account-key-file", &key, "--service-account-signing-key-file", &key])
            .args(["--service-cluster-ip-range", "10.96.0.0/24"])
            // No controller creates the namespace's `default` service account here.
            .args(["--disable-admission-plugins", "ServiceAccount"])
            .arg("--cert-dir")
            .arg(dir.join("certs"));
        let cluster = Self {
            server: format!("https://127.0.0.1:{secure}"),
            ca_file: ca.ca_cert,
            dir: dir.to_path_buf(),
            _etcd: etcd,
            apiserver: ChildGuard::spawn("kube-apiserver", apiserver)?,
        };
        cluster.wait_ready(Duration::from_secs(120))?;
        Ok(cluster)
    }

    fn wait_ready(&self, within: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.call("GET", "/readyz", ADMIN_TOKEN, None).is_ok() {
                return Ok(());
            }
            if start.elapsed() > within {
                let log = self.apiserver.stderr_text();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                bail!(
                    "kube-apiserver not ready after {within:?}; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// One API call with `curl`; the response body as JSON (`null` for a non-JSON body such as
    /// /readyz's `ok`). Fails on an HTTP error status.
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<(&str, &str)>) -> Result<Value> {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--fail-with-body", "--max-time", "10", "-X", method])
            .arg("--cacert")
            .arg(&self.ca_file)
            .args(["-H", &format!("Authorization: Bearer {token}")]);
        if let Some((content_type, data)) = body {
            cmd.args(["-H", &format!("Content-Type: {content_type}"), "--data-binary", data]);
        }
        let out = cmd.arg(format!("{}{path}", self.server)).stdin(Stdio::null()).output().context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("{method} {path}: curl {}: {text}{}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates an object as the administrator; returns it as stored (with its UID).
    pub fn create(&self, collection: &str, object: &Value) -> Result<Value> {
        self.call("POST", collection, ADMIN_TOKEN, Some(("application/json", &object.to_string())))
    }

    /// Creates an object from a YAML document as the administrator (the API server reads YAML).
    pub fn create_yaml(&self, collection: &str, yaml: &str) -> Result<Value> {
        self.call("POST", collection, ADMIN_TOKEN, Some(("application/yaml", yaml)))
    }

    /// Binds a ClusterRole to [`AGENT_USER`].
    pub fn bind_agent(&self, cluster_role: &str) -> Result<()> {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{cluster_role}-test-binding")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": AGENT_USER}],
        });
        self.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", &binding).map(drop)
    }

    /// A file holding a token, for goscope's `--k8s-token-file`.
    pub fn token_file(&self, token: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("token-{}", &token[..token.len().min(16)]));
        fs::write(&path, token)?;
        Ok(path)
    }
}
