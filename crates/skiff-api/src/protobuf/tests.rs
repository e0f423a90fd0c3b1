//! Decoding captured kubectl bodies and k8s-pb (prost) encodings of typical objects.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::core::v1 as corev1;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as crd;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::json;

use super::descriptors::{KINDS, MESSAGES, META_KINDS};
use super::schema::{Special, Ty, INLINE, OMIT, PTR, REP};
use super::*;

/// A body as client-go writes it: magic, then runtime.Unknown around the object.
fn envelope(api_version: &str, kind: &str, object: &impl prost::Message) -> Vec<u8> {
    envelope_raw(api_version, kind, object.encode_to_vec())
}

fn envelope_raw(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn object_meta(name: &str, namespace: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        namespace: s(namespace),
        ..Default::default()
    })
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn quantity(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn int_port(port: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(port),
        str_val: Some(String::new()),
    })
}

fn named_port(name: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(name),
    })
}

/// `kubectl 1.33 create namespace foo`, byte for byte (kubectl-wire.md §4.4).
const KUBECTL_CREATE_NAMESPACE: &[u8] = &[
    0x6b, 0x38, 0x73, 0x00, // "k8s\0"
    0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09, b'N', b'a', b'm', b'e', b's', b'p', b'a', b'c',
    b'e', // typeMeta
    0x12, 0x1b, // raw
    0x0a, 0x13, 0x0a, 0x03, b'f', b'o', b'o', 0x12, 0x00, 0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38, 0x00,
    0x42, 0x00, // metadata, empty strings and all
    0x12, 0x00, // spec
    0x1a, 0x02, 0x0a, 0x00, // status{phase:""}
    0x1a, 0x00, 0x22, 0x00, // contentEncoding, contentType
];

#[test]
fn kubectl_create_namespace_capture() {
    let object = decode(KUBECTL_CREATE_NAMESPACE).expect("decodes");
    // Exactly kubectl 1.31's JSON body for the same command without its
    // `"creationTimestamp":null`: empty strings and the zero generation are dropped
    // (omitempty), spec and status stay as {} (structs are never omitted by Go).
    assert_eq!(
        serde_json::to_string(&object).expect("serializes"),
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"foo"},"spec":{},"status":{}}"#
    );
}

#[test]
fn configmap_with_data() {
    let cm = corev1::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            labels: labels(&[("app", "web")]),
            annotations: labels(&[("note", "")]),
            ..object_meta("settings", "default").unwrap_or_default()
        }),
        immutable: None,
        data: labels(&[("a", "1"), ("empty", ""), ("multi", "x\ny\n")]),
        binary_data: [("bin".to_string(), vec![0u8, 1, 2, 255])].into(),
    };
    let object = decode(&envelope("v1", "ConfigMap", &cm)).expect("decodes");
    assert_eq!(
        object,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "settings",
                "namespace": "default",
                "labels": {"app": "web"},
                "annotations": {"note": ""}
            },
            "data": {"a": "1", "empty": "", "multi": "x\ny\n"},
            "binaryData": {"bin": "AAEC/w=="}
        })
    );
}

#[test]
fn secret_with_binary_data() {
    let secret = corev1::Secret {
        metadata: object_meta("creds", "prod"),
        immutable: Some(false), // a pointer: kept even though false
        data: [
            ("key".to_string(), vec![0xde, 0xad, 0xbe, 0xef]),
            ("empty".to_string(), vec![]),
            ("text".to_string(), b"hunter2".to_vec()),
        ]
        .into(),
        string_data: BTreeMap::new(),
        r#type: s("Opaque"),
    };
    let object = decode(&envelope("v1", "Secret", &secret)).expect("decodes");
    assert_eq!(object["kind"], "Secret");
    assert_eq!(object["immutable"], json!(false));
    assert_eq!(object["type"], "Opaque");
    assert_eq!(
        object["data"],
        json!({"empty": "", "key": "3q2+7w==", "text": "aHVudGVyMg=="})
    );
    assert!(object.get("stringData").is_none());
}

fn web_deployment() -> apps::Deployment {
    let container = corev1::Container {
        name: s("web"),
        image: s("nginx:1.27"),
        ports: vec![corev1::ContainerPort {
            name: s("http"),
            container_port: Some(80),
            protocol: s("TCP"),
            host_port: Some(0), // non-pointer, omitempty: dropped
            host_ip: Some(String::new()),
        }],
        env: vec![
            corev1::EnvVar {
                name: s("MODE"),
                value: s("prod"),
                value_from: None,
            },
            corev1::EnvVar {
                name: s("POD_NAME"),
                value: Some(String::new()),
                value_from: Some(corev1::EnvVarSource {
                    field_ref: Some(corev1::ObjectFieldSelector {
                        api_version: s("v1"),
                        field_path: s("metadata.name"),
                    }),
                    ..Default::default()
                }),
            },
        ],
        resources: Some(corev1::ResourceRequirements {
            limits: [
                ("cpu".to_string(), quantity("500m")),
                ("memory".to_string(), quantity("128Mi")),
            ]
            .into(),
            requests: [("cpu".to_string(), quantity("250m"))].into(),
            claims: vec![],
        }),
        liveness_probe: Some(corev1::Probe {
            handler: Some(corev1::ProbeHandler {
                http_get: Some(corev1::HttpGetAction {
                    path: s("/healthz"),
                    port: int_port(8080),
                    scheme: s("HTTP"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(3),
            period_seconds: Some(10),
            ..Default::default()
        }),
        readiness_probe: Some(corev1::Probe {
            handler: Some(corev1::ProbeHandler {
                tcp_socket: Some(corev1::TcpSocketAction {
                    port: named_port("http"),
                    host: Some(String::new()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_path: s("/dev/termination-log"),
        image_pull_policy: s("IfNotPresent"),
        ..Default::default()
    };
    apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            labels: labels(&[("app", "web")]),
            creation_timestamp: Some(meta::Time::default()), // zero: empty message
            ..object_meta("web", "default").unwrap_or_default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: labels(&[("app", "web")]),
                match_expressions: vec![],
            }),
            template: Some(corev1::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: labels(&[("app", "web")]),
                    ..Default::default()
                }),
                spec: Some(corev1::PodSpec {
                    containers: vec![container],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy::default()),
            min_ready_seconds: Some(0),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    }
}

#[test]
fn deployment_with_zero_replicas_probes_and_resources() {
    let object = decode(&envelope("apps/v1", "Deployment", &web_deployment())).expect("decodes");
    assert_eq!(object["apiVersion"], "apps/v1");
    assert_eq!(object["kind"], "Deployment");
    assert_eq!(
        object["metadata"],
        json!({"name": "web", "namespace": "default", "labels": {"app": "web"}})
    );
    let spec = &object["spec"];
    assert_eq!(spec["replicas"], json!(0), "a pointer keeps its zero");
    assert!(spec.get("minReadySeconds").is_none(), "omitempty drops 0");
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "web"}}));
    assert_eq!(spec["strategy"], json!({}), "Go never omits a struct");
    assert_eq!(object["status"], json!({}));
    assert_eq!(spec["template"]["metadata"], json!({"labels": {"app": "web"}}));

    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "web");
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(
        container["ports"],
        json!([{"name": "http", "containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        container["env"],
        json!([
            {"name": "MODE", "value": "prod"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}
        ])
    );
    assert_eq!(
        container["resources"],
        json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}})
    );
    // ProbeHandler is embedded with `json:",inline"`: its fields sit in the probe.
    assert_eq!(
        container["livenessProbe"],
        json!({
            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
            "initialDelaySeconds": 3,
            "periodSeconds": 10
        })
    );
    assert_eq!(container["readinessProbe"], json!({"tcpSocket": {"port": "http"}}));
    assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    // PodSpec.containers is `json:"containers"` without omitempty, but the other lists are.
    assert_eq!(
        pod.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["containers".to_string()])
    );
}

#[test]
fn service_with_named_target_port() {
    let service = corev1::Service {
        metadata: object_meta("web", "default"),
        spec: Some(corev1::ServiceSpec {
            ports: vec![
                corev1::ServicePort {
                    name: s("http"),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: named_port("http"),
                    node_port: Some(0),
                    ..Default::default()
                },
                corev1::ServicePort {
                    name: s("metrics"),
                    port: Some(9090),
                    target_port: int_port(9090),
                    ..Default::default()
                },
            ],
            selector: labels(&[("app", "web")]),
            cluster_ip: Some(String::new()),
            r#type: s("ClusterIP"),
            session_affinity: Some(String::new()),
            ..Default::default()
        }),
        status: Some(corev1::ServiceStatus {
            load_balancer: Some(corev1::LoadBalancerStatus::default()),
            conditions: vec![],
        }),
    };
    let object = decode(&envelope("v1", "Service", &service)).expect("decodes");
    assert_eq!(
        object,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"},
                    {"name": "metrics", "port": 9090, "targetPort": 9090}
                ],
                "selector": {"app": "web"},
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        })
    );
}

#[test]
fn self_subject_access_review() {
    // What `kubectl auth can-i create pods` sends.
    let review = authz::SelfSubjectAccessReview {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: s("default"),
                verb: s("create"),
                group: Some(String::new()),
                version: Some(String::new()),
                resource: s("pods"),
                subresource: Some(String::new()),
                name: Some(String::new()),
                ..Default::default()
            }),
            non_resource_attributes: None,
        }),
        status: Some(authz::SubjectAccessReviewStatus {
            allowed: Some(false),
            denied: Some(false),
            reason: Some(String::new()),
            evaluation_error: Some(String::new()),
        }),
    };
    let object = decode(&envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", &review)).expect("decodes");
    // `allowed` has no omitempty: kubectl's JSON body carries "status":{"allowed":false} too.
    assert_eq!(
        object,
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {},
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}},
            "status": {"allowed": false}
        })
    );
}

#[test]
fn eviction_with_delete_options() {
    let eviction = policy::Eviction {
        metadata: object_meta("web-abc", "default"),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(meta::Preconditions {
                uid: s("1234"),
                resource_version: None,
            }),
            propagation_policy: s("Background"),
            dry_run: vec!["All".to_string()],
            ..Default::default()
        }),
    };
    let object = decode(&envelope("policy/v1", "Eviction", &eviction)).expect("decodes");
    assert_eq!(
        object,
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "web-abc", "namespace": "default"},
            "deleteOptions": {
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "1234"},
                "propagationPolicy": "Background",
                "dryRun": ["All"]
            }
        })
    );
}

#[test]
fn delete_options_under_any_group_version() {
    let options = meta::DeleteOptions {
        propagation_policy: s("Foreground"),
        ..Default::default()
    };
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let object = decode(&envelope(api_version, "DeleteOptions", &options)).expect("decodes");
        assert_eq!(object["apiVersion"], api_version);
        assert_eq!(object["propagationPolicy"], "Foreground");
    }
}

#[test]
fn times_quantities_and_managed_fields() {
    let pod = corev1::Pod {
        metadata: Some(meta::ObjectMeta {
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(999),
            }),
            deletion_timestamp: Some(meta::Time {
                seconds: Some(0),
                nanos: None,
            }),
            generation: Some(3),
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                api_version: s("v1"),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:metadata":{"f:labels":{}}}"#.to_vec()),
                }),
                ..Default::default()
            }],
            ..object_meta("p", "default").unwrap_or_default()
        }),
        spec: None,
        status: Some(corev1::PodStatus {
            pod_ips: vec![corev1::PodIp { ip: s("10.0.0.5") }],
            host_ips: vec![],
            ..Default::default()
        }),
    };
    let object = decode(&envelope("v1", "Pod", &pod)).expect("decodes");
    let metadata = &object["metadata"];
    assert_eq!(metadata["creationTimestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(metadata["deletionTimestamp"], "1970-01-01T00:00:00Z");
    assert_eq!(metadata["generation"], json!(3));
    assert_eq!(
        metadata["managedFields"][0]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {}}})
    );
    assert_eq!(object["status"]["podIPs"], json!([{"ip": "10.0.0.5"}]));
    // An absent non-pointer PodSpec is written as Go's zero PodSpec, whose only
    // non-omitempty field, `containers`, is a nil slice (null, dropped).
    assert_eq!(object["spec"], json!({}));
}

#[test]
fn micro_time_on_a_lease() {
    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: object_meta("leader", "kube-system"),
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(15),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_789),
            }),
            ..Default::default()
        }),
    };
    let object = decode(&envelope("coordination.k8s.io/v1", "Lease", &lease)).expect("decodes");
    assert_eq!(
        object["spec"],
        json!({
            "holderIdentity": "node-1",
            "leaseDurationSeconds": 15,
            "renewTime": "2023-11-14T22:13:20.123456Z"
        })
    );
}

#[test]
fn custom_resource_definition_schema() {
    let json_value = |raw: &str| crd::Json {
        raw: Some(raw.as_bytes().to_vec()),
    };
    let string_prop = crd::JsonSchemaProps {
        r#type: s("string"),
        default: Some(json_value(r#""small""#)),
        r#enum: vec![json_value(r#""small""#), json_value(r#""large""#)],
        ..Default::default()
    };
    let schema = crd::JsonSchemaProps {
        r#type: s("object"),
        properties: [
            ("size".to_string(), string_prop),
            (
                "replicas".to_string(),
                crd::JsonSchemaProps {
                    r#type: s("integer"),
                    minimum: Some(0.0),
                    maximum: Some(2.5),
                    example: Some(json_value("3")),
                    ..Default::default()
                },
            ),
            (
                "tags".to_string(),
                crd::JsonSchemaProps {
                    r#type: s("array"),
                    items: Some(Box::new(crd::JsonSchemaPropsOrArray {
                        schema: Some(Box::new(crd::JsonSchemaProps {
                            r#type: s("string"),
                            ..Default::default()
                        })),
                        j_son_schemas: vec![],
                    })),
                    x_kubernetes_list_type: s("set"),
                    ..Default::default()
                },
            ),
            (
                "extra".to_string(),
                crd::JsonSchemaProps {
                    r#type: s("object"),
                    additional_properties: Some(Box::new(crd::JsonSchemaPropsOrBool {
                        allows: Some(true),
                        schema: None,
                    })),
                    x_kubernetes_preserve_unknown_fields: Some(true),
                    ..Default::default()
                },
            ),
        ]
        .into(),
        required: vec!["size".to_string()],
        ..Default::default()
    };
    let definition = crd::CustomResourceDefinition {
        metadata: Some(meta::ObjectMeta {
            name: s("widgets.example.com"),
            ..Default::default()
        }),
        spec: Some(crd::CustomResourceDefinitionSpec {
            group: s("example.com"),
            names: Some(crd::CustomResourceDefinitionNames {
                plural: s("widgets"),
                singular: s("widget"),
                kind: s("Widget"),
                list_kind: s("WidgetList"),
                ..Default::default()
            }),
            scope: s("Namespaced"),
            versions: vec![crd::CustomResourceDefinitionVersion {
                name: s("v1"),
                served: Some(true),
                storage: Some(true),
                schema: Some(crd::CustomResourceValidation {
                    open_apiv3_schema: Some(schema),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let object = decode(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &definition,
    ))
    .expect("decodes");
    let version = &object["spec"]["versions"][0];
    assert_eq!(version["name"], "v1");
    assert_eq!(version["served"], json!(true));
    assert_eq!(
        version["schema"]["openAPIV3Schema"],
        json!({
            "type": "object",
            "required": ["size"],
            "properties": {
                "extra": {
                    "type": "object",
                    "additionalProperties": true,
                    "x-kubernetes-preserve-unknown-fields": true
                },
                "replicas": {"type": "integer", "maximum": 2.5, "minimum": 0, "example": 3},
                "size": {"type": "string", "default": "small", "enum": ["small", "large"]},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}
            }
        })
    );
    assert_eq!(
        object["spec"]["names"],
        json!({"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"})
    );
    // status is a non-pointer struct with non-omitempty fields, as Go writes it.
    assert_eq!(object["status"], json!({"acceptedNames": {"plural": "", "kind": ""}}));
}

#[test]
fn raw_extension_holds_json_or_a_nested_envelope() {
    let as_json = apps::ControllerRevision {
        metadata: object_meta("web-1", "default"),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"replicas":2}}"#.to_vec()),
        }),
        revision: Some(1),
    };
    let object = decode(&envelope("apps/v1", "ControllerRevision", &as_json)).expect("decodes");
    assert_eq!(object["data"], json!({"spec": {"replicas": 2}}));
    assert_eq!(object["revision"], json!(1));

    let nested = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(KUBECTL_CREATE_NAMESPACE.to_vec()),
        }),
        ..as_json.clone()
    };
    let object = decode(&envelope("apps/v1", "ControllerRevision", &nested)).expect("decodes");
    assert_eq!(object["data"]["kind"], "Namespace");
    assert_eq!(object["data"]["metadata"]["name"], "foo");

    let broken = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(b"{not json".to_vec()),
        }),
        ..as_json
    };
    let error = decode(&envelope("apps/v1", "ControllerRevision", &broken)).expect_err("invalid JSON is refused");
    assert!(
        error
            .to_string()
            .starts_with("malformed protobuf at ControllerRevision.data: invalid JSON"),
        "{error}"
    );
}

#[test]
fn packed_and_unpacked_repeated_numbers() {
    // batch/v1 PodFailurePolicyOnExitCodesRequirement {1: containerName, 2: operator,
    // 3: repeated int32 values}, inside PodFailurePolicyRule {2: onExitCodes} inside
    // PodFailurePolicy {1: rules} inside JobSpec {11: podFailurePolicy} inside Job {2: spec}.
    let wrap = |requirement: Vec<u8>| {
        let mut rule = vec![0x12, requirement.len() as u8];
        rule.extend(requirement);
        let mut policy = vec![0x0a, rule.len() as u8];
        policy.extend(rule);
        let mut spec = vec![0x5a, policy.len() as u8];
        spec.extend(policy);
        let mut job = vec![0x12, spec.len() as u8];
        job.extend(spec);
        envelope_raw("batch/v1", "Job", job)
    };
    let operator = [0x12, 2, b'I', b'n'];
    let mut unpacked = operator.to_vec();
    unpacked.extend([0x18, 1, 0x18, 42, 0x18, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let mut packed = operator.to_vec();
    packed.extend([0x1a, 7, 1, 42, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    for body in [wrap(unpacked), wrap(packed)] {
        let object = decode(&body).expect("decodes");
        assert_eq!(
            object["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"],
            json!({"operator": "In", "values": [1, 42, -1]})
        );
    }
}

#[test]
fn unknown_fields_are_skipped() {
    let mut raw = corev1::Namespace {
        metadata: object_meta("foo", ""),
        ..Default::default()
    }
    .encode_to_vec();
    // field 999, varint; field 1000, bytes; field 1001, fixed32; field 1002, fixed64
    raw.extend([0xb8, 0x3e, 0x05]);
    raw.extend([0xc2, 0x3e, 0x02, b'h', b'i']);
    raw.extend([0xcd, 0x3e, 1, 2, 3, 4]);
    raw.extend([0xd1, 0x3e, 1, 2, 3, 4, 5, 6, 7, 8]);
    let object = decode(&envelope_raw("v1", "Namespace", raw)).expect("decodes");
    assert_eq!(
        object,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}, "spec": {}, "status": {}})
    );
}

#[test]
fn envelope_errors_are_named() {
    let foo = envelope("apps/v1", "Foo", &corev1::Namespace::default());
    assert_eq!(
        decode(&foo).map_err(|e| e.to_string()),
        Err("unknown kind `apps/v1 Foo`".to_string())
    );
    assert!(matches!(
        decode(b"{\"kind\":\"Namespace\"}"),
        Err(ProtobufError::BadMagic { found }) if found == "7b 22 6b 69"
    ));
    assert!(matches!(decode(b""), Err(ProtobufError::BadMagic { .. })));
    assert_eq!(decode(&MAGIC), Err(ProtobufError::MissingTypeMeta));
    let mut gzip = envelope("v1", "Namespace", &corev1::Namespace::default());
    gzip.extend([0x1a, 4, b'g', b'z', b'i', b'p']);
    assert_eq!(
        decode(&gzip),
        Err(ProtobufError::UnsupportedContentEncoding("gzip".to_string()))
    );
}

#[test]
fn truncation_names_the_path() {
    let body = envelope("apps/v1", "Deployment", &web_deployment());
    // Cut the envelope short: the raw field claims more bytes than there are.
    let error = decode(&body[..body.len() - 10]).expect_err("truncated");
    assert!(
        matches!(&error, ProtobufError::Malformed { path, problem: WireProblem::Truncated { field: 2, .. } } if path == "envelope"),
        "{error}"
    );
    // A consistent envelope around a cut object: the error points into the object.
    let mut spec = web_deployment().spec.unwrap_or_default().encode_to_vec();
    spec.truncate(spec.len() - 3);
    let raw = [vec![0x12], varint(spec.len()), spec].concat();
    let error = decode(&envelope_raw("apps/v1", "Deployment", raw)).expect_err("truncated");
    assert_eq!(
        error.to_string(),
        "malformed protobuf at Deployment.spec: truncated varint"
    );
    // Deeper: an IntOrString with an impossible type, inside an inlined ProbeHandler.
    let mut deployment = web_deployment();
    if let Some(port) = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.as_mut())
        .and_then(|t| t.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
        .and_then(|c| c.liveness_probe.as_mut())
        .and_then(|p| p.handler.as_mut())
        .and_then(|h| h.http_get.as_mut())
        .and_then(|g| g.port.as_mut())
    {
        port.r#type = Some(7);
    }
    let error = decode(&envelope("apps/v1", "Deployment", &deployment)).expect_err("bad type");
    assert_eq!(
        error.to_string(),
        "malformed protobuf at Deployment.spec.template.spec.containers[0].livenessProbe.httpGet.port: \
         IntOrString type 7 is neither 0 (int) nor 1 (string)"
    );
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    // JSONSchemaProps {28: not} nested far past MAX_DEPTH.
    let mut schema: Vec<u8> = Vec::new();
    for _ in 0..1_000 {
        schema = [vec![0xe2, 0x01], varint(schema.len()), schema].concat(); // field 28
    }
    // CustomResourceValidation {1: openAPIV3Schema} in CustomResourceDefinitionVersion {4: schema}
    let definition = crd::CustomResourceDefinition {
        spec: Some(crd::CustomResourceDefinitionSpec {
            versions: vec![crd::CustomResourceDefinitionVersion {
                name: s("v1"),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut raw = definition.encode_to_vec();
    // Append a second spec whose version carries the deep schema; last one wins.
    let validation = [vec![0x0a], varint(schema.len()), schema].concat();
    let version = [vec![0x22], varint(validation.len()), validation].concat();
    let spec = [vec![0x3a], varint(version.len()), version].concat();
    raw.extend([vec![0x12], varint(spec.len()), spec].concat());
    let error = decode(&envelope_raw(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        raw,
    ))
    .expect_err("too deep");
    assert!(
        matches!(
            &error,
            ProtobufError::Malformed {
                problem: WireProblem::TooDeep(_),
                ..
            }
        ),
        "{error}"
    );
}

fn varint(mut v: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn garbage_and_truncated_inputs_never_panic() {
    let samples = [
        KUBECTL_CREATE_NAMESPACE.to_vec(),
        envelope("apps/v1", "Deployment", &web_deployment()),
    ];
    for body in &samples {
        // Every prefix.
        for end in 0..body.len() {
            let _ = decode(&body[..end]);
        }
        // Every single-byte corruption at a few values.
        for i in 0..body.len() {
            for value in [0x00, 0x07, 0x7f, 0x80, 0xff] {
                let mut corrupt = body.clone();
                corrupt[i] = value;
                let _ = decode(&corrupt);
            }
        }
    }
    // Random bodies behind a valid magic and a Deployment type meta, so the bytes reach
    // the table-driven decoder, and behind nothing at all.
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let head = envelope_raw("apps/v1", "Deployment", Vec::new());
    for round in 0..3_000 {
        let len = (noise.next() % 300) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| noise.next() as u8).collect();
        let raw = [vec![0x12], varint(garbage.len()), garbage.clone()].concat();
        let body = [head[..head.len() - 6].to_vec(), raw].concat();
        let _ = decode(&body);
        let _ = decode(&garbage);
        if round % 2 == 0 {
            let _ = decode(&[MAGIC.to_vec(), garbage].concat());
        }
    }
}

#[test]
fn table_is_consistent() {
    let count = MESSAGES.len();
    for message in &MESSAGES {
        let mut tags: Vec<u32> = message.fields.iter().map(|f| f.tag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), message.fields.len(), "{}", message.name);
        let mut names: Vec<&str> = message
            .fields
            .iter()
            .filter(|f| !f.has(INLINE))
            .map(|f| f.json)
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            message.fields.iter().filter(|f| !f.has(INLINE)).count(),
            "{}",
            message.name
        );
        for field in message.fields {
            if let Ty::Msg(i) | Ty::MapMsg(i) = field.ty {
                assert!(usize::from(i) < count, "{}.{}", message.name, field.json);
            }
            assert!(!(field.has(PTR) && field.has(OMIT)), "{}.{}", message.name, field.json);
            assert!(!(field.has(REP) && field.has(PTR)), "{}.{}", message.name, field.json);
        }
    }
    assert!(KINDS.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    assert!(META_KINDS.windows(2).all(|w| w[0].0 < w[1].0));
    for (api_version, kind, i) in KINDS {
        let name = MESSAGES[usize::from(i)].name;
        assert!(name.ends_with(&format!(".{kind}")), "{api_version} {kind}: {name}");
    }
    let specials = |special| MESSAGES.iter().filter(|m| m.special == special).count();
    assert_eq!(specials(Special::Time), 1);
    assert_eq!(specials(Special::Duration), 1);
    assert!(specials(Special::Items) >= 3);
}

#[test]
fn kinds_from_the_brief_are_covered() {
    let wanted = [
        ("v1", "Namespace"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("v1", "ResourceQuota"),
        ("v1", "Pod"),
        ("v1", "PersistentVolumeClaim"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("policy/v1", "PodDisruptionBudget"),
        ("policy/v1", "Eviction"),
        ("networking.k8s.io/v1", "Ingress"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("authorization.k8s.io/v1", "SubjectAccessReview"),
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("events.k8s.io/v1", "Event"),
        ("coordination.k8s.io/v1", "Lease"),
        ("storage.k8s.io/v1", "StorageClass"),
    ];
    for (api_version, kind) in wanted {
        assert!(message_for(api_version, kind).is_some(), "{api_version} {kind}");
    }
}

#[test]
fn pointer_strings_keep_their_empty_value() {
    // PersistentVolumeClaimSpec.storageClassName is a *string: "" means "no class".
    let claim = corev1::PersistentVolumeClaim {
        metadata: object_meta("data", "default"),
        spec: Some(corev1::PersistentVolumeClaimSpec {
            access_modes: vec!["ReadWriteOnce".to_string()],
            storage_class_name: Some(String::new()),
            resources: Some(corev1::VolumeResourceRequirements {
                requests: [("storage".to_string(), quantity("1Gi"))].into(),
                limits: BTreeMap::new(),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let object = decode(&envelope("v1", "PersistentVolumeClaim", &claim)).expect("decodes");
    assert_eq!(
        object["spec"],
        json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": ""
        })
    );
}

#[test]
fn volume_sources_are_inlined_and_empty_pointers_kept() {
    let pod = corev1::Pod {
        metadata: object_meta("p", "default"),
        spec: Some(corev1::PodSpec {
            containers: vec![corev1::Container {
                name: s("c"),
                ..Default::default()
            }],
            volumes: vec![corev1::Volume {
                name: s("scratch"),
                volume_source: Some(corev1::VolumeSource {
                    empty_dir: Some(corev1::EmptyDirVolumeSource::default()),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        status: None,
    };
    let object = decode(&envelope("v1", "Pod", &pod)).expect("decodes");
    assert_eq!(object["spec"]["volumes"], json!([{"name": "scratch", "emptyDir": {}}]));
    // A container's name has no omitempty: written even when it is not on the wire.
    let nameless = corev1::Pod {
        spec: Some(corev1::PodSpec {
            containers: vec![corev1::Container::default()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let object = decode(&envelope("v1", "Pod", &nameless)).expect("decodes");
    assert_eq!(object["spec"]["containers"], json!([{"name": "", "resources": {}}]));
}

#[test]
fn bad_magic_says_what_it_found() {
    assert_eq!(
        decode(&[0x6b, 0x38]).map_err(|e| e.to_string()),
        Err(
            r#"bad magic: a kubernetes protobuf body starts with 6b 38 73 00 ("k8s\0"), this one with 6b 38"#
                .to_string()
        )
    );
}

#[test]
fn duration_is_written_like_go() {
    // metav1.Duration is used by no GA kind; decode the message directly.
    let index = MESSAGES
        .iter()
        .position(|m| m.name == "meta.v1.Duration")
        .and_then(|i| u16::try_from(i).ok())
        .expect("meta.v1.Duration is in the table");
    let encoded = meta::Duration {
        duration: Some(90_500_000_000),
    }
    .encode_to_vec();
    let value = message::decode(index, &encoded, 0).expect("decodes");
    assert_eq!(value, json!("1m30.5s"));
    assert_eq!(message::decode(index, &[], 0).expect("decodes"), json!("0s"));
}

#[test]
fn go_zero_time_is_left_out() {
    // Another encoder might write Go's zero time (year 1) instead of an empty message.
    let namespace = corev1::Namespace {
        metadata: Some(meta::ObjectMeta {
            name: s("foo"),
            creation_timestamp: Some(meta::Time {
                seconds: Some(-62_135_596_800),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let object = decode(&envelope("v1", "Namespace", &namespace)).expect("decodes");
    assert_eq!(object["metadata"], json!({"name": "foo"}));
}
