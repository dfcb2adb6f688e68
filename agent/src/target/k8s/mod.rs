//! Which Kubernetes namespace, pod, container and workload a watched process belongs to, as
//! OpenTelemetry `k8s.*` resource attributes on every line, span, log record and metric of its
//! session.
//!
//! The process's cgroup path names its pod UID and container ID ([`cgroup`]); the API server,
//! through a cached list + watch of the node's pods ([`api`]), turns those into namespace, pod,
//! node, container and owning workload names. Without API access (not in a cluster, or no
//! permission) what the cgroup and the target's downward-API environment variables say remains,
//! and `goscope run` says so once.
pub mod api;
pub mod cgroup;

use std::{collections::BTreeMap, fmt};

pub use api::{ApiConfig, K8sError, PodCache};
pub use cgroup::CgroupIdentity;
use opentelemetry_semantic_conventions::attribute as sc;

/// `k8s.*` attribute → value, sorted by key.
pub type K8sAttributes = BTreeMap<&'static str, String>;

/// How sessions look identities up: the API's pod cache when there is one.
#[derive(Clone, Default)]
pub struct K8sLookup {
    pub pods: Option<PodCache>,
    /// This node's name (`--k8s-node-name` / `NODE_NAME`), for `k8s.node.name`.
    pub node_name: Option<String>,
}

impl fmt::Debug for K8sLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("K8sLookup").field("api", &self.pods.is_some()).field("node_name", &self.node_name).finish()
    }
}

impl K8sLookup {
    /// The attributes of process `pid`: `downward` (what the target's environment said) first,
    /// then the cgroup's pod UID, then, when the API knows the pod, its names and workloads.
    pub fn attributes(&self, pid: u32, downward: &[(&'static str, String)]) -> K8sAttributes {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|text| CgroupIdentity::from_proc_cgroup(&text))
            .unwrap_or_default();
        self.attributes_of(&cgroup, downward)
    }

    fn attributes_of(&self, cgroup: &CgroupIdentity, downward: &[(&'static str, String)]) -> K8sAttributes {
        let mut attrs: K8sAttributes = downward.iter().cloned().collect();
        let Some(uid) = cgroup.pod_uid.clone() else { return attrs };
        attrs.insert(sc::K8S_POD_UID, uid.clone());
        if let Some(node) = &self.node_name {
            attrs.entry(sc::K8S_NODE_NAME).or_insert_with(|| node.clone());
        }
        let Some(resolved) = self.pods.as_ref().and_then(|pods| pods.lookup(&uid)) else { return attrs };
        let pod = &resolved.pod;
        attrs.insert(sc::K8S_NAMESPACE_NAME, pod.namespace.clone());
        attrs.insert(sc::K8S_POD_NAME, pod.name.clone());
        if let Some(node) = &pod.node {
            attrs.insert(sc::K8S_NODE_NAME, node.clone());
        }
        if let Some(name) = cgroup.container_id.as_deref().and_then(|id| pod.container_name(id)) {
            attrs.insert(sc::K8S_CONTAINER_NAME, name.to_owned());
        }
        for w in &resolved.workloads {
            attrs.insert(w.kind.attribute(), w.name.clone());
        }
        attrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_pod_uid_only_the_environment_speaks() {
        let lookup = K8sLookup { pods: None, node_name: Some("n1".into()) };
        let env = [(sc::K8S_POD_NAME, "from-env".to_owned())];
        let attrs = lookup.attributes_of(&CgroupIdentity::default(), &env);
        assert_eq!(attrs, K8sAttributes::from([(sc::K8S_POD_NAME, "from-env".to_owned())]));
    }

    #[test]
    fn a_pod_uid_without_the_api_gives_uid_and_node() {
        let lookup = K8sLookup { pods: None, node_name: Some("n1".into()) };
        let cgroup = CgroupIdentity { pod_uid: Some("u".into()), container_id: None };
        let attrs = lookup.attributes_of(&cgroup, &[]);
        assert_eq!(attrs.get(sc::K8S_POD_UID).map(String::as_str), Some("u"));
        assert_eq!(attrs.get(sc::K8S_NODE_NAME).map(String::as_str), Some("n1"));
        assert_eq!(attrs.len(), 2);
    }
}
