//! The registry of resource types: what each group/version/resource is, how it is scoped and
//! stored, which subresources it has, and the kind-specific hooks (typed decoding, defaulting,
//! validation, table columns). Built-in kinds are listed here; custom resources are added from
//! CustomResourceDefinitions at run time through [`ResourceType::custom`].

use std::sync::Arc;

use serde_json::Value;

use crate::builtin;

/// Where the replica count and selector live, for the `scale` subresource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// JSON pointer, e.g. `/spec/replicas`.
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One served resource at one group/version.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// Versions of one resource share storage: the store key is `/registry/<storage>/...`.
    pub storage: String,
    /// Built-in kinds have typed hooks; custom resources have a schema instead.
    pub builtin: Option<&'static builtin::Hooks>,
    /// For custom resources: the structural schema (`openAPIV3Schema`) of this version.
    pub schema: Option<Arc<Value>>,
    /// For custom resources: `additionalPrinterColumns` of this version.
    pub printer_columns: Vec<Value>,
    /// The names of other versions served for the same resource, preferred first (for discovery).
    pub preferred: bool,
    /// A create-only, never-stored kind (reviews such as SelfSubjectAccessReview).
    pub virtual_kind: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn group_version(&self) -> String {
        self.api_version()
    }

    /// `deployments.apps`, `pods`: how Kubernetes names the resource in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps`, `Pod`: how Kubernetes names the kind in validation messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn is_custom(&self) -> bool {
        self.builtin.is_none()
    }

    /// The store key of an object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/{}", self.storage, ns, name),
            _ => format!("/registry/{}/{}", self.storage, name),
        }
    }

    /// The store prefix of a collection: all namespaces when `namespace` is `None`.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.storage, ns),
            _ => format!("/registry/{}/", self.storage),
        }
    }
}

/// Specification of a built-in resource, as written in the table below.
struct Spec {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    scale: bool,
    storage: Option<&'static str>,
    virtual_kind: bool,
}

const fn spec(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Spec {
    Spec {
        group,
        version,
        kind,
        plural,
        namespaced,
        short: &[],
        categories: &[],
        status: false,
        scale: false,
        storage: None,
        virtual_kind: false,
    }
}

impl Spec {
    const fn short(mut self, s: &'static [&'static str]) -> Self {
        self.short = s;
        self
    }
    const fn all(mut self) -> Self {
        self.categories = &["all"];
        self
    }
    const fn status(mut self) -> Self {
        self.status = true;
        self
    }
    const fn scale(mut self) -> Self {
        self.scale = true;
        self
    }
    const fn virtual_kind(mut self) -> Self {
        self.virtual_kind = true;
        self
    }
    const fn storage(mut self, s: &'static str) -> Self {
        self.storage = Some(s);
        self
    }
}

const NS: bool = true;
const CLUSTER: bool = false;

const BUILTIN: &[Spec] = &[
    spec("", "v1", "Namespace", "namespaces", CLUSTER)
        .short(&["ns"])
        .status(),
    spec("", "v1", "Pod", "pods", NS).short(&["po"]).all().status(),
    spec("", "v1", "PodTemplate", "podtemplates", NS),
    spec("", "v1", "ReplicationController", "replicationcontrollers", NS)
        .short(&["rc"])
        .all()
        .status()
        .scale(),
    spec("", "v1", "Service", "services", NS).short(&["svc"]).all().status(),
    spec("", "v1", "Endpoints", "endpoints", NS).short(&["ep"]),
    spec("", "v1", "ConfigMap", "configmaps", NS).short(&["cm"]),
    spec("", "v1", "Secret", "secrets", NS),
    spec("", "v1", "ServiceAccount", "serviceaccounts", NS).short(&["sa"]),
    spec("", "v1", "Node", "nodes", CLUSTER).short(&["no"]).status(),
    spec("", "v1", "Event", "events", NS).short(&["ev"]).storage("events"),
    spec("", "v1", "PersistentVolume", "persistentvolumes", CLUSTER)
        .short(&["pv"])
        .status(),
    spec("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", NS)
        .short(&["pvc"])
        .status(),
    spec("", "v1", "LimitRange", "limitranges", NS).short(&["limits"]),
    spec("", "v1", "ResourceQuota", "resourcequotas", NS)
        .short(&["quota"])
        .status(),
    spec("apps", "v1", "Deployment", "deployments", NS)
        .short(&["deploy"])
        .all()
        .status()
        .scale(),
    spec("apps", "v1", "ReplicaSet", "replicasets", NS)
        .short(&["rs"])
        .all()
        .status()
        .scale(),
    spec("apps", "v1", "StatefulSet", "statefulsets", NS)
        .short(&["sts"])
        .all()
        .status()
        .scale(),
    spec("apps", "v1", "DaemonSet", "daemonsets", NS)
        .short(&["ds"])
        .all()
        .status(),
    spec("apps", "v1", "ControllerRevision", "controllerrevisions", NS),
    spec("batch", "v1", "Job", "jobs", NS).all().status(),
    spec("batch", "v1", "CronJob", "cronjobs", NS)
        .short(&["cj"])
        .all()
        .status(),
    spec("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", NS),
    spec("coordination.k8s.io", "v1", "Lease", "leases", NS),
    spec("storage.k8s.io", "v1", "StorageClass", "storageclasses", CLUSTER).short(&["sc"]),
    spec("networking.k8s.io", "v1", "Ingress", "ingresses", NS)
        .short(&["ing"])
        .status(),
    spec("networking.k8s.io", "v1", "IngressClass", "ingressclasses", CLUSTER),
    spec("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", NS).short(&["netpol"]),
    spec("rbac.authorization.k8s.io", "v1", "Role", "roles", NS),
    spec(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        CLUSTER,
    ),
    spec("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", NS),
    spec(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        CLUSTER,
    ),
    // autoscaling/v2 is the storage version; v1 is converted (see `builtin::convert`).
    spec(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        NS,
    )
    .short(&["hpa"])
    .all()
    .status()
    .storage("horizontalpodautoscalers"),
    spec(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        NS,
    )
    .short(&["hpa"])
    .all()
    .status()
    .storage("horizontalpodautoscalers"),
    spec("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", NS)
        .short(&["pdb"])
        .status(),
    spec("events.k8s.io", "v1", "Event", "events", NS)
        .short(&["ev"])
        .storage("events"),
    spec("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", CLUSTER).short(&["pc"]),
    spec(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        CLUSTER,
    )
    .virtual_kind(),
    spec(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        CLUSTER,
    )
    .virtual_kind(),
    spec(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        CLUSTER,
    )
    .virtual_kind(),
    spec(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        CLUSTER,
    )
    .short(&["crd", "crds"])
    .status(),
];

/// All built-in resource types, in discovery order. The first of several versions of a
/// group is the preferred one.
pub fn builtin_types() -> Vec<Arc<ResourceType>> {
    let mut seen_groups: Vec<&str> = Vec::new();
    BUILTIN
        .iter()
        .map(|s| {
            let preferred = !seen_groups.contains(&s.group) || {
                // The same group at the same version as the first-seen one.
                BUILTIN.iter().find(|o| o.group == s.group).map(|o| o.version) == Some(s.version)
            };
            if !seen_groups.contains(&s.group) {
                seen_groups.push(s.group);
            }
            let storage = match s.storage {
                Some(st) => st.to_string(),
                None if s.group.is_empty() => s.plural.to_string(),
                None => format!("{}/{}", s.group, s.plural),
            };
            Arc::new(ResourceType {
                group: s.group.into(),
                version: s.version.into(),
                kind: s.kind.into(),
                list_kind: format!("{}List", s.kind),
                plural: s.plural.into(),
                singular: s.kind.to_lowercase(),
                namespaced: s.namespaced,
                short_names: s.short.iter().map(|x| x.to_string()).collect(),
                categories: s.categories.iter().map(|x| x.to_string()).collect(),
                status: s.status,
                scale: s.scale.then(|| ScalePaths {
                    spec_replicas: "/spec/replicas".into(),
                    status_replicas: "/status/replicas".into(),
                    label_selector: Some("/status/selector".into()),
                }),
                storage,
                builtin: Some(builtin::hooks(s.group, s.version, s.kind)),
                schema: None,
                printer_columns: Vec::new(),
                preferred,
                virtual_kind: s.virtual_kind,
            })
        })
        .collect()
}

/// Resource types of one CustomResourceDefinition (one per served version), or an error naming
/// the field of the CRD that makes it unusable.
pub fn custom_types(crd: &Value) -> Vec<Arc<ResourceType>> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_first = versions
        .iter()
        .position(|v| v["storage"] == Value::Bool(true))
        .unwrap_or(0);
    let mut out = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        if v["served"] == Value::Bool(false) {
            continue;
        }
        let Some(version) = v["name"].as_str() else {
            continue;
        };
        let sub = &v["subresources"];
        let scale = sub.get("scale").filter(|s| s.is_object()).map(|s| ScalePaths {
            spec_replicas: json_path_to_pointer(s["specReplicasPath"].as_str().unwrap_or(".spec.replicas")),
            status_replicas: json_path_to_pointer(s["statusReplicasPath"].as_str().unwrap_or(".status.replicas")),
            label_selector: s["labelSelectorPath"].as_str().map(json_path_to_pointer),
        });
        out.push(Arc::new(ResourceType {
            group: group.clone(),
            version: version.to_string(),
            kind: kind.clone(),
            list_kind: names["listKind"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{kind}List")),
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_lowercase()),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            status: sub.get("status").is_some_and(|s| s.is_object()),
            scale,
            storage: format!("{group}/{plural}"),
            builtin: None,
            schema: v["schema"].get("openAPIV3Schema").cloned().map(Arc::new),
            printer_columns: v["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
            preferred: i == storage_first,
            virtual_kind: false,
        }));
    }
    out
}

/// `.spec.replicas` → `/spec/replicas`.
pub fn json_path_to_pointer(path: &str) -> String {
    path.split('.')
        .filter(|s| !s.is_empty())
        .fold(String::new(), |mut acc, seg| {
            acc.push('/');
            acc.push_str(&seg.replace('~', "~0").replace('/', "~1"));
            acc
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_unique_group_version_resource() {
        let types = builtin_types();
        let mut seen = std::collections::HashSet::new();
        for t in &types {
            assert!(
                seen.insert((t.group.clone(), t.version.clone(), t.plural.clone())),
                "{} twice",
                t.plural
            );
        }
        let hpa: Vec<_> = types
            .iter()
            .filter(|t| t.plural == "horizontalpodautoscalers")
            .collect();
        assert_eq!(hpa.len(), 2);
        assert!(hpa[0].preferred && hpa[0].version == "v2");
        assert!(!hpa[1].preferred);
        assert_eq!(hpa[0].storage, hpa[1].storage);
    }

    #[test]
    fn keys_follow_scope() {
        let types = builtin_types();
        let pods = types.iter().find(|t| t.plural == "pods").expect("pods");
        assert_eq!(pods.key(Some("default"), "web"), "/registry/pods/default/web");
        let nodes = types.iter().find(|t| t.plural == "nodes").expect("nodes");
        assert_eq!(nodes.key(Some("default"), "n1"), "/registry/nodes/n1");
        let deploy = types.iter().find(|t| t.plural == "deployments").expect("deployments");
        assert_eq!(deploy.prefix(None), "/registry/apps/deployments/");
        assert_eq!(deploy.qualified_plural(), "deployments.apps");
    }

    #[test]
    fn crd_versions_become_types() {
        let crd = serde_json::json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                          "schema": {"openAPIV3Schema": {"type": "object"}}},
                         {"name": "v0", "served": false, "storage": false}]}});
        let t = custom_types(&crd);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].list_kind, "WidgetList");
        assert!(t[0].status);
        assert_eq!(
            t[0].scale.as_ref().map(|s| s.spec_replicas.as_str()),
            Some("/spec/size")
        );
        assert_eq!(t[0].key(Some("ns1"), "w"), "/registry/example.com/widgets/ns1/w");
    }
}
