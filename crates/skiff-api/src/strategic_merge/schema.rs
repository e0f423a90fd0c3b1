//! The patch metadata of the built-in kinds: a small graph of named types, each listing the
//! fields that carry a `patchStrategy`/`patchMergeKey` struct tag in `k8s.io/api` v1.33, or
//! that lead to such a field.
//!
//! A field that is not listed has no patch metadata: an object under it merges key by key and a
//! list under it is replaced wholesale, exactly as upstream treats an untagged field. So the table
//! only names the paths that matter, and a type such as `PodSpec` is described once and reached
//! from every place that embeds it (Pod `spec`, the workloads' `spec.template.spec`, CronJob's
//! `spec.jobTemplate.spec.template.spec`).

use super::ListStrategy;

/// What JSON shape the schema declares for a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A struct or a map: merged key by key unless the strategy is [`ListStrategy::Atomic`]
    /// (`patchStrategy:"replace"`).
    Object,
    /// A list: replaced unless the strategy is [`ListStrategy::Merge`].
    List,
}

/// One field of a [`TypeDef`] and its patch metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) shape: Shape,
    pub(crate) strategy: ListStrategy,
    /// `patchStrategy` includes `retainKeys`.
    pub(crate) retain_keys: bool,
    /// The type of the object, or of each list element; `None` when nothing under it is tagged.
    pub(crate) ty: Option<&'static TypeDef>,
}

/// A named API type.
#[derive(Debug)]
pub(crate) struct TypeDef {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [Field],
    /// For `map[string]T` types: the type of every value.
    pub(crate) values: Option<&'static TypeDef>,
}

impl Field {
    /// A nested struct (or map) that is merged key by key.
    const fn object(name: &'static str, ty: &'static TypeDef) -> Self {
        Self {
            name,
            shape: Shape::Object,
            strategy: ListStrategy::Merge { key: None },
            retain_keys: false,
            ty: Some(ty),
        }
    }

    /// A struct tagged `patchStrategy:"retainKeys"`: merged, and `$retainKeys` may clear it.
    const fn retain_keys_object(name: &'static str) -> Self {
        Self {
            name,
            shape: Shape::Object,
            strategy: ListStrategy::Merge { key: None },
            retain_keys: true,
            ty: None,
        }
    }

    /// A struct tagged `patchStrategy:"replace"`: the patch value replaces it.
    const fn replace(name: &'static str) -> Self {
        Self {
            name,
            shape: Shape::Object,
            strategy: ListStrategy::Atomic,
            retain_keys: false,
            ty: None,
        }
    }

    /// An untagged list, replaced wholesale, whose elements are of type `ty`.
    const fn atomic_list(name: &'static str, ty: &'static TypeDef) -> Self {
        Self {
            name,
            shape: Shape::List,
            strategy: ListStrategy::Atomic,
            retain_keys: false,
            ty: Some(ty),
        }
    }

    /// A list of objects tagged `patchStrategy:"merge"` with `patchMergeKey:key`.
    const fn keyed(name: &'static str, key: &'static str, ty: Option<&'static TypeDef>) -> Self {
        Self {
            name,
            shape: Shape::List,
            strategy: ListStrategy::Merge { key: Some(key) },
            retain_keys: false,
            ty,
        }
    }

    /// A list of primitives tagged `patchStrategy:"merge"`: a set union.
    const fn set(name: &'static str) -> Self {
        Self {
            name,
            shape: Shape::List,
            strategy: ListStrategy::Merge { key: None },
            retain_keys: false,
            ty: None,
        }
    }

    /// Adds `retainKeys` to the field's strategy (`patchStrategy:"merge,retainKeys"`).
    const fn and_retain_keys(mut self) -> Self {
        self.retain_keys = true;
        self
    }
}

impl TypeDef {
    const fn new(name: &'static str, fields: &'static [Field]) -> Self {
        Self {
            name,
            fields,
            values: None,
        }
    }

    /// The metadata of field `name`, if the schema knows it.
    pub(crate) fn field(&self, name: &str) -> Option<Field> {
        if let Some(field) = self.fields.iter().find(|f| f.name == name) {
            return Some(*field);
        }
        self.values.map(|ty| Field::object("", ty))
    }
}

/// The type of a built-in kind, by kind name (the group is not needed: no two built-in kinds
/// with the same name differ in patch metadata).
pub(crate) fn kind_type(kind: &str) -> Option<&'static TypeDef> {
    KINDS.iter().find(|(name, _)| *name == kind).map(|(_, ty)| *ty)
}

// ---------------------------------------------------------------------------------------------
// meta/v1

static OBJECT_META: TypeDef = TypeDef::new(
    "ObjectMeta",
    &[Field::keyed("ownerReferences", "uid", None), Field::set("finalizers")],
);

/// A kind whose only tagged fields are those of its `metadata`.
static PLAIN_OBJECT: TypeDef = TypeDef::new("Object", &[Field::object("metadata", &OBJECT_META)]);

/// `status.conditions` merged by `type`, the shape of most statuses.
static CONDITIONS_STATUS: TypeDef = TypeDef::new("ConditionsStatus", &[Field::keyed("conditions", "type", None)]);

// ---------------------------------------------------------------------------------------------
// core/v1: pods and templates

const CONTAINER_FIELDS: &[Field] = &[
    Field::keyed("ports", "containerPort", None),
    Field::keyed("env", "name", None),
    Field::keyed("volumeMounts", "mountPath", None),
    Field::keyed("volumeDevices", "devicePath", None),
];

static CONTAINER: TypeDef = TypeDef::new("Container", CONTAINER_FIELDS);

/// `EphemeralContainer` inlines `EphemeralContainerCommon`, whose tags are those of `Container`.
static EPHEMERAL_CONTAINER: TypeDef = TypeDef::new("EphemeralContainer", CONTAINER_FIELDS);

static PERSISTENT_VOLUME_CLAIM_TEMPLATE: TypeDef = TypeDef::new(
    "PersistentVolumeClaimTemplate",
    &[Field::object("metadata", &OBJECT_META)],
);

static EPHEMERAL_VOLUME_SOURCE: TypeDef = TypeDef::new(
    "EphemeralVolumeSource",
    &[Field::object("volumeClaimTemplate", &PERSISTENT_VOLUME_CLAIM_TEMPLATE)],
);

static VOLUME: TypeDef = TypeDef::new("Volume", &[Field::object("ephemeral", &EPHEMERAL_VOLUME_SOURCE)]);

static POD_SPEC: TypeDef = TypeDef::new(
    "PodSpec",
    &[
        Field::keyed("volumes", "name", Some(&VOLUME)).and_retain_keys(),
        Field::keyed("initContainers", "name", Some(&CONTAINER)),
        Field::keyed("containers", "name", Some(&CONTAINER)),
        Field::keyed("ephemeralContainers", "name", Some(&EPHEMERAL_CONTAINER)),
        Field::keyed("imagePullSecrets", "name", None),
        Field::keyed("hostAliases", "ip", None),
        Field::keyed("topologySpreadConstraints", "topologyKey", None),
        Field::keyed("schedulingGates", "name", None),
        Field::keyed("resourceClaims", "name", None).and_retain_keys(),
    ],
);

static CONTAINER_STATUS: TypeDef = TypeDef::new(
    "ContainerStatus",
    &[
        Field::keyed("volumeMounts", "mountPath", None),
        Field::keyed("allocatedResourcesStatus", "name", None),
    ],
);

static POD_STATUS: TypeDef = TypeDef::new(
    "PodStatus",
    &[
        Field::keyed("conditions", "type", None),
        Field::keyed("hostIPs", "ip", None),
        Field::keyed("podIPs", "ip", None),
        // Untagged, so replaced wholesale; the element type is recorded for completeness.
        Field::atomic_list("initContainerStatuses", &CONTAINER_STATUS),
        Field::atomic_list("containerStatuses", &CONTAINER_STATUS),
        Field::atomic_list("ephemeralContainerStatuses", &CONTAINER_STATUS),
        Field::keyed("resourceClaimStatuses", "name", None).and_retain_keys(),
    ],
);

static POD: TypeDef = TypeDef::new(
    "Pod",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &POD_SPEC),
        Field::object("status", &POD_STATUS),
    ],
);

static POD_TEMPLATE_SPEC: TypeDef = TypeDef::new(
    "PodTemplateSpec",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &POD_SPEC),
    ],
);

static POD_TEMPLATE: TypeDef = TypeDef::new(
    "PodTemplate",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("template", &POD_TEMPLATE_SPEC),
    ],
);

/// `spec.template` of the workload controllers.
static TEMPLATED_SPEC: TypeDef = TypeDef::new("TemplatedSpec", &[Field::object("template", &POD_TEMPLATE_SPEC)]);

/// ReplicationController, ReplicaSet, DaemonSet and Job: a pod template and status conditions.
static TEMPLATED_WORKLOAD: TypeDef = TypeDef::new(
    "TemplatedWorkload",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &TEMPLATED_SPEC),
        Field::object("status", &CONDITIONS_STATUS),
    ],
);

// ---------------------------------------------------------------------------------------------
// core/v1: the other kinds

static SERVICE_SPEC: TypeDef = TypeDef::new("ServiceSpec", &[Field::keyed("ports", "port", None)]);

static SERVICE: TypeDef = TypeDef::new(
    "Service",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &SERVICE_SPEC),
        Field::object("status", &CONDITIONS_STATUS),
    ],
);

static SERVICE_ACCOUNT: TypeDef = TypeDef::new(
    "ServiceAccount",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::keyed("secrets", "name", None),
    ],
);

static NODE_SPEC: TypeDef = TypeDef::new("NodeSpec", &[Field::set("podCIDRs")]);

static NODE_STATUS: TypeDef = TypeDef::new(
    "NodeStatus",
    &[
        Field::keyed("conditions", "type", None),
        Field::keyed("addresses", "type", None),
    ],
);

static NODE: TypeDef = TypeDef::new(
    "Node",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &NODE_SPEC),
        Field::object("status", &NODE_STATUS),
    ],
);

/// Namespace and PersistentVolumeClaim: status conditions only.
static OBJECT_WITH_CONDITIONS: TypeDef = TypeDef::new(
    "ObjectWithConditions",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("status", &CONDITIONS_STATUS),
    ],
);

static COMPONENT_STATUS: TypeDef = TypeDef::new(
    "ComponentStatus",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::keyed("conditions", "type", None),
    ],
);

// ---------------------------------------------------------------------------------------------
// apps/v1

static DEPLOYMENT_SPEC: TypeDef = TypeDef::new(
    "DeploymentSpec",
    &[
        Field::object("template", &POD_TEMPLATE_SPEC),
        Field::retain_keys_object("strategy"),
    ],
);

static DEPLOYMENT: TypeDef = TypeDef::new(
    "Deployment",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &DEPLOYMENT_SPEC),
        Field::object("status", &CONDITIONS_STATUS),
    ],
);

static STATEFUL_SET_SPEC: TypeDef = TypeDef::new(
    "StatefulSetSpec",
    &[
        Field::object("template", &POD_TEMPLATE_SPEC),
        Field::atomic_list("volumeClaimTemplates", &OBJECT_WITH_CONDITIONS),
    ],
);

static STATEFUL_SET: TypeDef = TypeDef::new(
    "StatefulSet",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &STATEFUL_SET_SPEC),
        Field::object("status", &CONDITIONS_STATUS),
    ],
);

// ---------------------------------------------------------------------------------------------
// batch/v1

static JOB_TEMPLATE_SPEC: TypeDef = TypeDef::new(
    "JobTemplateSpec",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &TEMPLATED_SPEC),
    ],
);

static CRON_JOB_SPEC: TypeDef = TypeDef::new("CronJobSpec", &[Field::object("jobTemplate", &JOB_TEMPLATE_SPEC)]);

static CRON_JOB: TypeDef = TypeDef::new(
    "CronJob",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &CRON_JOB_SPEC),
    ],
);

// ---------------------------------------------------------------------------------------------
// policy/v1

static POD_DISRUPTION_BUDGET_SPEC: TypeDef = TypeDef::new("PodDisruptionBudgetSpec", &[Field::replace("selector")]);

static POD_DISRUPTION_BUDGET: TypeDef = TypeDef::new(
    "PodDisruptionBudget",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &POD_DISRUPTION_BUDGET_SPEC),
        Field::object("status", &CONDITIONS_STATUS),
    ],
);

// ---------------------------------------------------------------------------------------------
// admissionregistration/v1, storage/v1

static WEBHOOK: TypeDef = TypeDef::new("Webhook", &[Field::keyed("matchConditions", "name", None)]);

static WEBHOOK_CONFIGURATION: TypeDef = TypeDef::new(
    "WebhookConfiguration",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::keyed("webhooks", "name", Some(&WEBHOOK)),
    ],
);

static VALIDATING_ADMISSION_POLICY_SPEC: TypeDef = TypeDef::new(
    "ValidatingAdmissionPolicySpec",
    &[
        Field::keyed("matchConditions", "name", None),
        Field::keyed("variables", "name", None),
    ],
);

static VALIDATING_ADMISSION_POLICY: TypeDef = TypeDef::new(
    "ValidatingAdmissionPolicy",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &VALIDATING_ADMISSION_POLICY_SPEC),
    ],
);

static CSI_NODE_SPEC: TypeDef = TypeDef::new("CSINodeSpec", &[Field::keyed("drivers", "name", None)]);

static CSI_NODE: TypeDef = TypeDef::new(
    "CSINode",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &CSI_NODE_SPEC),
    ],
);

// ---------------------------------------------------------------------------------------------
// apiextensions/v1

static JSON_SCHEMA_PROPS_MAP: TypeDef = TypeDef {
    name: "map[string]JSONSchemaProps",
    fields: &[],
    values: Some(&JSON_SCHEMA_PROPS),
};

static JSON_SCHEMA_PROPS: TypeDef = TypeDef::new(
    "JSONSchemaProps",
    &[
        Field::keyed("x-kubernetes-validations", "rule", None),
        Field::object("properties", &JSON_SCHEMA_PROPS_MAP),
        Field::object("patternProperties", &JSON_SCHEMA_PROPS_MAP),
        Field::object("definitions", &JSON_SCHEMA_PROPS_MAP),
        // `items` may also be a list of schemas; as a list it is untagged, hence atomic.
        Field::object("items", &JSON_SCHEMA_PROPS),
        Field::object("additionalProperties", &JSON_SCHEMA_PROPS),
        Field::object("additionalItems", &JSON_SCHEMA_PROPS),
        Field::object("not", &JSON_SCHEMA_PROPS),
        Field::atomic_list("allOf", &JSON_SCHEMA_PROPS),
        Field::atomic_list("oneOf", &JSON_SCHEMA_PROPS),
        Field::atomic_list("anyOf", &JSON_SCHEMA_PROPS),
    ],
);

static CUSTOM_RESOURCE_VALIDATION: TypeDef = TypeDef::new(
    "CustomResourceValidation",
    &[Field::object("openAPIV3Schema", &JSON_SCHEMA_PROPS)],
);

static CUSTOM_RESOURCE_DEFINITION_VERSION: TypeDef = TypeDef::new(
    "CustomResourceDefinitionVersion",
    &[Field::object("schema", &CUSTOM_RESOURCE_VALIDATION)],
);

static CUSTOM_RESOURCE_DEFINITION_SPEC: TypeDef = TypeDef::new(
    "CustomResourceDefinitionSpec",
    // Untagged: `versions` is replaced wholesale, so the tag inside JSONSchemaProps only
    // matters to a future caller that merges a schema on its own.
    &[Field::atomic_list("versions", &CUSTOM_RESOURCE_DEFINITION_VERSION)],
);

static CUSTOM_RESOURCE_DEFINITION: TypeDef = TypeDef::new(
    "CustomResourceDefinition",
    &[
        Field::object("metadata", &OBJECT_META),
        Field::object("spec", &CUSTOM_RESOURCE_DEFINITION_SPEC),
    ],
);

// ---------------------------------------------------------------------------------------------
// The kinds

static KINDS: &[(&str, &TypeDef)] = &[
    // core/v1
    ("Binding", &PLAIN_OBJECT),
    ("ComponentStatus", &COMPONENT_STATUS),
    ("ConfigMap", &PLAIN_OBJECT),
    ("Endpoints", &PLAIN_OBJECT),
    ("Event", &PLAIN_OBJECT),
    ("LimitRange", &PLAIN_OBJECT),
    ("Namespace", &OBJECT_WITH_CONDITIONS),
    ("Node", &NODE),
    ("PersistentVolume", &PLAIN_OBJECT),
    ("PersistentVolumeClaim", &OBJECT_WITH_CONDITIONS),
    ("Pod", &POD),
    ("PodTemplate", &POD_TEMPLATE),
    ("ReplicationController", &TEMPLATED_WORKLOAD),
    ("ResourceQuota", &PLAIN_OBJECT),
    ("Secret", &PLAIN_OBJECT),
    ("Service", &SERVICE),
    ("ServiceAccount", &SERVICE_ACCOUNT),
    // apps/v1
    ("ControllerRevision", &PLAIN_OBJECT),
    ("DaemonSet", &TEMPLATED_WORKLOAD),
    ("Deployment", &DEPLOYMENT),
    ("ReplicaSet", &TEMPLATED_WORKLOAD),
    ("StatefulSet", &STATEFUL_SET),
    // batch/v1
    ("CronJob", &CRON_JOB),
    ("Job", &TEMPLATED_WORKLOAD),
    // autoscaling/v1 and v2 (v1 has no `status.conditions`; the entry is harmless there)
    ("HorizontalPodAutoscaler", &OBJECT_WITH_CONDITIONS),
    ("Scale", &PLAIN_OBJECT),
    // discovery/v1, coordination/v1, events/v1 (Event above)
    ("EndpointSlice", &PLAIN_OBJECT),
    ("Lease", &PLAIN_OBJECT),
    // networking/v1
    ("Ingress", &PLAIN_OBJECT),
    ("IngressClass", &PLAIN_OBJECT),
    ("IPAddress", &PLAIN_OBJECT),
    ("NetworkPolicy", &PLAIN_OBJECT),
    ("ServiceCIDR", &OBJECT_WITH_CONDITIONS),
    // rbac/v1
    ("ClusterRole", &PLAIN_OBJECT),
    ("ClusterRoleBinding", &PLAIN_OBJECT),
    ("Role", &PLAIN_OBJECT),
    ("RoleBinding", &PLAIN_OBJECT),
    // policy/v1
    ("PodDisruptionBudget", &POD_DISRUPTION_BUDGET),
    // storage/v1
    ("CSIDriver", &PLAIN_OBJECT),
    ("CSINode", &CSI_NODE),
    ("CSIStorageCapacity", &PLAIN_OBJECT),
    ("StorageClass", &PLAIN_OBJECT),
    ("VolumeAttachment", &PLAIN_OBJECT),
    // admissionregistration/v1
    ("MutatingWebhookConfiguration", &WEBHOOK_CONFIGURATION),
    ("ValidatingAdmissionPolicy", &VALIDATING_ADMISSION_POLICY),
    ("ValidatingAdmissionPolicyBinding", &PLAIN_OBJECT),
    ("ValidatingWebhookConfiguration", &WEBHOOK_CONFIGURATION),
    // flowcontrol/v1
    ("FlowSchema", &OBJECT_WITH_CONDITIONS),
    ("PriorityLevelConfiguration", &OBJECT_WITH_CONDITIONS),
    // certificates/v1, node/v1, scheduling/v1
    ("CertificateSigningRequest", &PLAIN_OBJECT),
    ("RuntimeClass", &PLAIN_OBJECT),
    ("PriorityClass", &PLAIN_OBJECT),
    // apiextensions/v1
    ("CustomResourceDefinition", &CUSTOM_RESOURCE_DEFINITION),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type reachable from the kinds, each once.
    fn reachable() -> Vec<&'static TypeDef> {
        let mut seen: Vec<&'static TypeDef> = Vec::new();
        let mut todo: Vec<&'static TypeDef> = KINDS.iter().map(|(_, ty)| *ty).collect();
        while let Some(ty) = todo.pop() {
            if seen.iter().any(|s| std::ptr::eq(*s, ty)) {
                continue;
            }
            seen.push(ty);
            todo.extend(ty.fields.iter().filter_map(|f| f.ty));
            todo.extend(ty.values);
        }
        seen
    }

    #[test]
    fn kinds_are_unique() {
        for (i, (kind, _)) in KINDS.iter().enumerate() {
            assert!(KINDS[i + 1..].iter().all(|(other, _)| other != kind), "{kind} twice");
        }
    }

    #[test]
    fn every_type_is_well_formed() {
        let types = reachable();
        assert!(types.len() > 30, "{} types", types.len());
        for ty in types {
            for (i, field) in ty.fields.iter().enumerate() {
                let at = format!("{}.{}", ty.name, field.name);
                assert!(!field.name.is_empty(), "{at}");
                assert!(ty.fields[i + 1..].iter().all(|f| f.name != field.name), "{at} twice");
                match (field.shape, field.strategy) {
                    // A keyed list; a set of primitives has no element type.
                    (Shape::List, ListStrategy::Merge { key: Some(key) }) => {
                        assert!(!key.is_empty(), "{at}")
                    }
                    (Shape::List, ListStrategy::Merge { key: None }) => {
                        assert!(field.ty.is_none(), "{at}")
                    }
                    (Shape::List, ListStrategy::Atomic) => assert!(field.ty.is_some(), "{at}"),
                    // `replace` structs have nothing to describe below them.
                    (Shape::Object, ListStrategy::Atomic) => assert!(field.ty.is_none(), "{at}"),
                    (Shape::Object, ListStrategy::Merge { key }) => {
                        assert!(key.is_none(), "{at}");
                        assert!(field.ty.is_some() || field.retain_keys, "{at}");
                    }
                }
            }
        }
    }

    #[test]
    fn map_types_type_every_value() {
        let ty = kind_type("CustomResourceDefinition").expect("CRDs have a table");
        let schema = ty
            .field("spec")
            .and_then(|f| f.ty)
            .and_then(|ty| ty.field("versions"))
            .and_then(|f| f.ty)
            .and_then(|ty| ty.field("schema"))
            .and_then(|f| f.ty)
            .and_then(|ty| ty.field("openAPIV3Schema"))
            .and_then(|f| f.ty)
            .expect("the schema is typed");
        let properties = schema.field("properties").and_then(|f| f.ty).expect("typed");
        let any = properties.field("anything").expect("every key is typed");
        assert_eq!(any.ty.map(|ty| ty.name), Some("JSONSchemaProps"));
    }
}
