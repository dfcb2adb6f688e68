//! Pods from the Kubernetes API server: one list of the pods (on this node when its name is known),
//! kept current by a watch on its own thread, and their owning workloads looked up once each.
//!
//! Plain HTTPS + JSON through the blocking reqwest client goscope already carries for OTLP: the
//! four read-only calls below do not earn a Kubernetes client crate's build time. RBAC needed:
//! get/list/watch on pods, get on replicasets and jobs (deploy/kubernetes/daemonset.yaml).
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Where the in-cluster service-account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A miss in the cache relists at most this often (a pod seen before the watch delivered it).
const RELIST_AT_MOST_EVERY: Duration = Duration::from_secs(2);
/// One watch request lasts at most this long before it is renewed.
const WATCH_SECONDS: u32 = 300;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the API server could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    #[error("reading {path}: {source}")]
    Credentials { path: String, source: std::io::Error },
    #[error("Kubernetes API client: {0}")]
    Client(String),
    #[error("Kubernetes API {url}: {message}")]
    Request { url: String, message: String },
}

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `https://host:port`.
    pub server: String,
    /// Bearer token.
    pub token: Option<String>,
    /// The CA that signed the server's certificate (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Only this node's pods are listed and watched when set (a DaemonSet's `NODE_NAME`).
    pub node_name: Option<String>,
}

impl ApiConfig {
    /// In a pod: `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted service account. None outside a
    /// cluster (no such variables).
    pub fn in_cluster(node_name: Option<String>) -> Result<Option<Self>, K8sError> {
        let Ok(host) = std::env::var("KUBERNETES_SERVICE_HOST") else { return Ok(None) };
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let read = |name: &str| {
            let path = format!("{SERVICE_ACCOUNT_DIR}/{name}");
            std::fs::read(&path).map_err(|source| K8sError::Credentials { path, source })
        };
        Ok(Some(Self {
            server: format!("https://{host}:{port}"),
            token: Some(String::from_utf8_lossy(&read("token")?).trim().to_owned()),
            ca_pem: Some(read("ca.crt")?),
            node_name,
        }))
    }
}

/// The kind of workload that owns a pod, outermost first (a Deployment rather than its ReplicaSet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "Deployment" => Self::Deployment,
            "ReplicaSet" => Self::ReplicaSet,
            "StatefulSet" => Self::StatefulSet,
            "DaemonSet" => Self::DaemonSet,
            "Job" => Self::Job,
            "CronJob" => Self::CronJob,
            _ => return None,
        })
    }

    /// The OpenTelemetry resource attribute that names a workload of this kind.
    pub fn attribute(self) -> &'static str {
        use opentelemetry_semantic_conventions::attribute as sc;
        match self {
            Self::Deployment => sc::K8S_DEPLOYMENT_NAME,
            Self::ReplicaSet => sc::K8S_REPLICASET_NAME,
            Self::StatefulSet => sc::K8S_STATEFULSET_NAME,
            Self::DaemonSet => sc::K8S_DAEMONSET_NAME,
            Self::Job => sc::K8S_JOB_NAME,
            Self::CronJob => sc::K8S_CRONJOB_NAME,
        }
    }

    /// Where an object of this kind is read, to follow its own owner (only these two have one
    /// worth following).
    fn path(self, namespace: &str, name: &str) -> Option<String> {
        match self {
            Self::ReplicaSet => Some(format!("/apis/apps/v1/namespaces/{namespace}/replicasets/{name}")),
            Self::Job => Some(format!("/apis/batch/v1/namespaces/{namespace}/jobs/{name}")),
            _ => None,
        }
    }
}

/// A workload: its kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
}

/// What the API says about one pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    /// (container ID without the `containerd://` scheme, container name).
    pub containers: Vec<(String, String)>,
    /// The controller among the owner references (a ReplicaSet, Job, StatefulSet …).
    pub controller: Option<Workload>,
}

impl PodInfo {
    /// From a Pod object's JSON; None when it lacks a UID or a name.
    pub fn from_json(pod: &Value) -> Option<Self> {
        let meta = &pod["metadata"];
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let statuses = ["containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"];
        let containers = statuses
            .iter()
            .filter_map(|k| pod["status"][k].as_array())
            .flatten()
            .filter_map(|c| {
                let id = c["containerID"].as_str()?;
                let id = id.split_once("://").map_or(id, |(_, id)| id);
                Some((id.to_owned(), text(&c["name"])?))
            })
            .collect();
        Some(Self {
            uid: text(&meta["uid"])?,
            namespace: text(&meta["namespace"]).unwrap_or_default(),
            name: text(&meta["name"])?,
            node: text(&pod["spec"]["nodeName"]),
            containers,
            controller: controller_of(meta),
        })
    }

    /// The container's name, by the runtime's ID from the cgroup.
    pub fn container_name(&self, container_id: &str) -> Option<&str> {
        self.containers.iter().find(|(id, _)| id == container_id).map(|(_, name)| name.as_str())
    }
}

/// The owner reference marked `controller: true`, if it is a workload kind.
fn controller_of(meta: &Value) -> Option<Workload> {
    meta["ownerReferences"].as_array()?.iter().find(|o| o["controller"].as_bool() == Some(true)).and_then(|o| {
        Some(Workload { kind: WorkloadKind::from_kind(o["kind"].as_str()?)?, name: o["name"].as_str()?.to_owned() })
    })
}

/// The pod, its workload (followed to the outermost: ReplicaSet → Deployment, Job → CronJob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPod {
    pub pod: PodInfo,
    /// Every workload from the pod's controller outwards.
    pub workloads: Vec<Workload>,
}

#[derive(Default)]
struct Cache {
    pods: HashMap<String, PodInfo>,
    resource_version: String,
    last_list: Option<Instant>,
    /// (namespace, kind, name) → that object's own controller.
    owners: HashMap<(String, WorkloadKind, String), Option<Workload>>,
}

/// A cache of the API server's pods, kept current by a watch thread.
#[derive(Clone)]
pub struct PodCache {
    config: Arc<ApiConfig>,
    client: reqwest::blocking::Client,
    cache: Arc<Mutex<Cache>>,
}

impl PodCache {
    /// Lists the pods once (so a bad address or missing permission fails here, clearly), then
    /// watches on a thread of its own.
    pub fn start(config: ApiConfig) -> Result<Self, K8sError> {
        let client = client(&config)?;
        let this = Self { config: Arc::new(config), client, cache: Arc::default() };
        this.relist()?;
        let watcher = this.clone();
        thread::Builder::new()
            .name("goscope-k8s-watch".into())
            .spawn(move || watcher.watch_forever())
            .map_err(|e| K8sError::Client(e.to_string()))?;
        Ok(this)
    }

    /// The pod with this UID and its workloads; a miss relists (rate-limited) before giving up.
    pub fn lookup(&self, uid: &str) -> Option<ResolvedPod> {
        let pod = self.cached(uid).or_else(|| {
            let recent = self.lock().last_list.is_some_and(|t| t.elapsed() < RELIST_AT_MOST_EVERY);
            if !recent {
                let _ = self.relist();
            }
            self.cached(uid)
        })?;
        let workloads = self.workloads_of(&pod);
        Some(ResolvedPod { pod, workloads })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, uid: &str) -> Option<PodInfo> {
        self.lock().pods.get(uid).cloned()
    }

    fn pods_path(&self) -> String {
        match &self.config.node_name {
            Some(node) => format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"),
            None => "/api/v1/pods?".to_owned(),
        }
    }

    fn relist(&self) -> Result<(), K8sError> {
        let list = self.get_json(&self.pods_path())?;
        let pods: HashMap<String, PodInfo> =
            list["items"].as_array().into_iter().flatten().filter_map(PodInfo::from_json).map(|p| (p.uid.clone(), p)).collect();
        let mut cache = self.lock();
        cache.pods = pods;
        cache.resource_version = list["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned();
        cache.last_list = Some(Instant::now());
        Ok(())
    }

    fn watch_forever(self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.watch_once() {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    log::debug!("Kubernetes pod watch: {e}; relisting in {backoff:?}");
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    let _ = self.relist();
                }
            }
        }
    }

    /// One watch request, applied to the cache until the server ends it.
    fn watch_once(&self) -> Result<(), K8sError> {
        let rv = self.lock().resource_version.clone();
        let path = format!("{}&watch=true&resourceVersion={rv}&timeoutSeconds={WATCH_SECONDS}", self.pods_path());
        let url = format!("{}{path}", self.config.server);
        let response = self
            .request(&url)
            .timeout(Duration::from_secs(u64::from(WATCH_SECONDS) + 30))
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .map_err(|e| K8sError::Request { url: url.clone(), message: e.to_string() })?;
        for line in BufReader::new(response).lines() {
            let line = line.map_err(|e| K8sError::Request { url: url.clone(), message: e.to_string() })?;
            let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
            self.apply(&event, &url)?;
        }
        Ok(())
    }

    fn apply(&self, event: &Value, url: &str) -> Result<(), K8sError> {
        let object = &event["object"];
        let mut cache = self.lock();
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
            cache.resource_version = rv.to_owned();
        }
        match event["type"].as_str() {
            Some("ADDED" | "MODIFIED") => {
                if let Some(pod) = PodInfo::from_json(object) {
                    cache.pods.insert(pod.uid.clone(), pod);
                }
            }
            Some("DELETED") => {
                if let Some(uid) = object["metadata"]["uid"].as_str() {
                    cache.pods.remove(uid);
                }
            }
            // 410 Gone: the resource version is too old; the caller relists.
            Some("ERROR") => {
                return Err(K8sError::Request { url: url.to_owned(), message: object["message"].to_string() });
            }
            _ => {}
        }
        Ok(())
    }

    /// The pod's controller and, through ReplicaSet/Job objects, theirs (each read once).
    fn workloads_of(&self, pod: &PodInfo) -> Vec<Workload> {
        let mut chain = Vec::new();
        let mut next = pod.controller.clone();
        while let Some(w) = next.take() {
            if chain.len() >= 4 {
                break;
            }
            next = self.owner_of(&pod.namespace, &w);
            chain.push(w);
        }
        chain
    }

    fn owner_of(&self, namespace: &str, w: &Workload) -> Option<Workload> {
        let key = (namespace.to_owned(), w.kind, w.name.clone());
        if let Some(known) = self.lock().owners.get(&key) {
            return known.clone();
        }
        let path = w.kind.path(namespace, &w.name)?;
        let owner = self.get_json(&path).ok().and_then(|obj| controller_of(&obj["metadata"]));
        self.lock().owners.insert(key, owner.clone());
        owner
    }

    fn request(&self, url: &str) -> reqwest::blocking::RequestBuilder {
        let req = self.client.get(url).header("Accept", "application/json");
        match &self.config.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    fn get_json(&self, path: &str) -> Result<Value, K8sError> {
        let url = format!("{}{path}", self.config.server);
        let fail = |message: String| K8sError::Request { url: url.clone(), message };
        let response = self.request(&url).timeout(REQUEST_TIMEOUT).send().map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = response.text().map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            let reason = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["message"].as_str().map(str::to_owned));
            return Err(fail(format!("{status}: {}", reason.unwrap_or(body))));
        }
        serde_json::from_str(&body).map_err(|e| fail(format!("not JSON: {e}")))
    }
}

fn client(config: &ApiConfig) -> Result<reqwest::blocking::Client, K8sError> {
    // reqwest is built without a rustls provider; the process default is ring (as for OTLP).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::blocking::Client::builder().connect_timeout(REQUEST_TIMEOUT);
    if let Some(pem) = &config.ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| K8sError::Client(format!("CA certificate: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| K8sError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"uid": "u-1", "name": "api-7d9f-abcde", "namespace": "shop",
                "ownerReferences": [{"kind": "ReplicaSet", "name": "api-7d9f", "controller": true}]},
            "spec": {"nodeName": "node-a"},
            "status": {"containerStatuses": [{"name": "api", "containerID": "containerd://abc"}]}
        })
    }

    #[test]
    fn a_pod_object_gives_names_containers_and_controller() {
        let p = PodInfo::from_json(&pod()).unwrap();
        assert_eq!((p.uid.as_str(), p.name.as_str(), p.namespace.as_str()), ("u-1", "api-7d9f-abcde", "shop"));
        assert_eq!(p.node.as_deref(), Some("node-a"));
        assert_eq!(p.container_name("abc"), Some("api"));
        assert_eq!(p.controller, Some(Workload { kind: WorkloadKind::ReplicaSet, name: "api-7d9f".into() }));
    }

    #[test]
    fn objects_without_identity_or_with_foreign_owners_are_handled() {
        assert_eq!(PodInfo::from_json(&json!({"metadata": {"name": "x"}})), None);
        let mut p = pod();
        p["metadata"]["ownerReferences"] = json!([{"kind": "Node", "name": "n", "controller": true}]);
        assert_eq!(PodInfo::from_json(&p).unwrap().controller, None);
        assert_eq!(PodInfo::from_json(&json!("not an object")), None);
    }
}
