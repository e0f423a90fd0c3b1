//! Behaviour tests of the strategic merge patch engine. The ordering and directive cases follow
//! upstream's `patch_test.go` (expected results re-derived on real kinds); the wire cases are the
//! patches kubectl sends (kubectl-wire.md §7.8, §7.13).

use serde_json::{json, Value};

use super::*;

/// Applies `patch` to `original` and checks that no directive survives.
fn patched(kind: &str, original: Value, patch: Value) -> Value {
    let result = apply(&original, &patch, kind).expect("the patch applies");
    assert_no_directives(&result);
    result
}

fn failed(kind: &str, original: Value, patch: Value) -> StrategicMergeError {
    apply(&original, &patch, kind).expect_err("the patch is rejected")
}

fn assert_no_directives(value: &Value) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                assert!(!key.starts_with('$'), "directive {key:?} left in the result");
                assert_no_directives(value);
            }
        }
        Value::Array(items) => items.iter().for_each(assert_no_directives),
        _ => {}
    }
}

/// A pod whose `spec.containers` is `containers`.
fn pod(containers: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
}

fn containers_of(pod: &Value) -> &Value {
    &pod["spec"]["containers"]
}

// ---------------------------------------------------------------------------------------------
// Merge-patch basics

#[test]
fn maps_merge_recursively_and_null_deletes_a_key() {
    let original = json!({
        "metadata": {"name": "cm", "labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}},
        "data": {"k": "v"}
    });
    let patch = json!({
        "metadata": {"labels": {"b": null, "c": "3"}, "annotations": null},
        "data": {"k2": "v2"}
    });
    let result = patched("ConfigMap", original, patch);
    assert_eq!(
        result,
        json!({
            "metadata": {"name": "cm", "labels": {"a": "1", "c": "3"}},
            "data": {"k": "v", "k2": "v2"}
        })
    );
}

#[test]
fn null_for_an_absent_key_and_nulls_in_new_subtrees_are_dropped() {
    let original = json!({"metadata": {"name": "cm"}});
    let patch = json!({"data": {"a": "1", "b": null}, "binaryData": null});
    let result = patched("ConfigMap", original, patch);
    assert_eq!(result, json!({"metadata": {"name": "cm"}, "data": {"a": "1"}}));
}

#[test]
fn scalars_and_untagged_lists_replace() {
    let original = pod(json!([{
        "name": "app", "image": "a:1", "args": ["x", "y"], "command": ["sh"]
    }]));
    let mut original = original;
    original["spec"]["tolerations"] = json!([{"key": "k1"}, {"key": "k2"}]);
    original["spec"]["priority"] = json!(1);
    let patch = json!({"spec": {
        "tolerations": [{"key": "k3"}],
        "priority": 2,
        "containers": [{"name": "app", "args": ["z"]}]
    }});
    let result = patched("Pod", original, patch);
    assert_eq!(result["spec"]["tolerations"], json!([{"key": "k3"}]));
    assert_eq!(result["spec"]["priority"], json!(2));
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "app", "image": "a:1", "args": ["z"], "command": ["sh"]}])
    );
}

#[test]
fn a_value_of_another_type_replaces() {
    let original = json!({"metadata": {"name": "cm"}, "data": "oops"});
    let patch = json!({"data": {"a": "1"}});
    assert_eq!(
        patched("ConfigMap", original, patch),
        json!({"metadata": {"name": "cm"}, "data": {"a": "1"}})
    );
}

#[test]
fn key_order_is_kept_and_new_keys_follow() {
    let original = json!({"metadata": {"name": "cm"}, "data": {"b": "1", "a": "2"}});
    let patch = json!({"data": {"c": "3", "b": "4"}});
    let result = patched("ConfigMap", original, patch);
    let keys: Vec<&str> = result["data"]
        .as_object()
        .expect("data is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["b", "a", "c"]);
}

#[test]
fn null_patch_is_a_no_op_and_null_original_is_empty() {
    let original = json!({"metadata": {"name": "cm"}});
    assert_eq!(patched("ConfigMap", original.clone(), Value::Null), original);
    assert_eq!(
        patched("ConfigMap", Value::Null, json!({"data": {"a": "1"}})),
        json!({"data": {"a": "1"}})
    );
}

// ---------------------------------------------------------------------------------------------
// Lists with a merge key

#[test]
fn containers_merge_by_name() {
    let original = pod(json!([
        {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]},
        {"name": "sidecar", "image": "side:1"}
    ]));
    let patch = json!({"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([
            {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "side:2"}
        ])
    );
}

#[test]
fn new_elements_go_before_the_untouched_ones_without_set_element_order() {
    // Upstream `mergeSlice` + `normalizeElementOrder`: an element the live list does not have is
    // placed before the server-only elements that follow it. kubectl always sends
    // `$setElementOrder` alongside, which then decides (see the ordering tests below).
    let original = pod(json!([{"name": "a"}, {"name": "b"}]));
    let patch = json!({"spec": {"containers": [{"name": "c", "image": "c:1"}, {"name": "d"}]}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "c", "image": "c:1"}, {"name": "d"}, {"name": "a"}, {"name": "b"}])
    );

    // A patch element that is already live keeps server-only elements before it in place.
    let original = pod(json!([{"name": "a"}, {"name": "b"}]));
    let patch = json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c"}]}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "a"}, {"name": "b", "image": "b:2"}, {"name": "c"}])
    );
}

#[test]
fn design_doc_example_without_set_element_order() {
    // preserve-order-in-strategic-merge-patch.md: live [B, C, A], patch [A', B', D] gives
    // [C, A', B', D]: the server-only C first, then the patch items in patch order.
    let original = pod(json!([{"name": "B"}, {"name": "C"}, {"name": "A"}]));
    let patch = json!({"spec": {"containers": [
        {"name": "A", "image": "a2"}, {"name": "B", "image": "b2"}, {"name": "D"}
    ]}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "C"}, {"name": "A", "image": "a2"}, {"name": "B", "image": "b2"}, {"name": "D"}])
    );
}

#[test]
fn nested_lists_merge_by_their_own_keys() {
    let original = pod(json!([{
        "name": "app",
        "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "volumeMounts": [{"mountPath": "/data", "name": "data"}],
        "volumeDevices": [{"devicePath": "/dev/x", "name": "blk"}]
    }]));
    let patch = json!({"spec": {"containers": [{
        "name": "app",
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "env": [{"name": "B", "value": "3"}],
        "volumeMounts": [{"mountPath": "/data", "readOnly": true}],
        "volumeDevices": [{"devicePath": "/dev/x", "name": "blk2"}]
    }]}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([{
            "name": "app",
            "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}],
            "volumeMounts": [{"mountPath": "/data", "name": "data", "readOnly": true}],
            "volumeDevices": [{"devicePath": "/dev/x", "name": "blk2"}]
        }])
    );
}

#[test]
fn pod_spec_lists_merge_by_key() {
    let original = json!({"spec": {
        "containers": [{"name": "app"}],
        "initContainers": [{"name": "init", "image": "i:1"}],
        "volumes": [{"name": "a", "emptyDir": {}}],
        "imagePullSecrets": [{"name": "reg1"}],
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}],
        "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}],
        "schedulingGates": [{"name": "g1"}]
    }});
    let patch = json!({"spec": {
        "initContainers": [{"name": "init", "image": "i:2"}],
        "volumes": [{"name": "a", "emptyDir": {"medium": "Memory"}}],
        "imagePullSecrets": [{"name": "reg1"}],
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}],
        "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}],
        "schedulingGates": [{"name": "g1"}]
    }});
    let result = patched("Pod", original, patch);
    let spec = &result["spec"];
    assert_eq!(spec["initContainers"], json!([{"name": "init", "image": "i:2"}]));
    assert_eq!(
        spec["volumes"],
        json!([{"name": "a", "emptyDir": {"medium": "Memory"}}])
    );
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "reg1"}]));
    // `hostnames` itself is untagged, hence replaced.
    assert_eq!(spec["hostAliases"], json!([{"ip": "10.0.0.1", "hostnames": ["b"]}]));
    assert_eq!(
        spec["topologySpreadConstraints"],
        json!([{"topologyKey": "zone", "maxSkew": 2}])
    );
    assert_eq!(spec["schedulingGates"], json!([{"name": "g1"}]));
}

#[test]
fn service_ports_merge_by_port() {
    let original = json!({"spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "https", "port": 443}
    ]}});
    let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
    let result = patched("Service", original, patch);
    assert_eq!(
        result["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": 9090}, {"name": "https", "port": 443}])
    );
}

#[test]
fn owner_references_merge_by_uid_and_conditions_by_type() {
    let original = json!({
        "metadata": {"ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "controller": true}]},
        "status": {"conditions": [
            {"type": "Available", "status": "False"},
            {"type": "Progressing", "status": "True"}
        ]}
    });
    let patch = json!({
        "metadata": {"ownerReferences": [{"uid": "u1", "blockOwnerDeletion": true}]},
        "status": {"conditions": [{"type": "Available", "status": "True"}]}
    });
    let result = patched("Deployment", original, patch);
    assert_eq!(
        result["metadata"]["ownerReferences"],
        json!([{"uid": "u1", "kind": "ReplicaSet", "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(
        result["status"]["conditions"],
        json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}])
    );
}

#[test]
fn node_addresses_merge_by_type() {
    let original = json!({"status": {"addresses": [
        {"type": "InternalIP", "address": "10.0.0.1"},
        {"type": "Hostname", "address": "n1"}
    ]}});
    let patch = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}});
    let result = patched("Node", original, patch);
    assert_eq!(
        result["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}])
    );
}

#[test]
fn cron_job_reaches_the_pod_spec_through_the_job_template() {
    let original = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "job", "image": "j:1", "env": [{"name": "A", "value": "1"}]}]
    }}}}}});
    let patch = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "job", "env": [{"name": "B", "value": "2"}]}]
    }}}}}});
    let result = patched("CronJob", original, patch);
    assert_eq!(
        result["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        json!([{"name": "job", "image": "j:1", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}])
    );
}

#[test]
fn duplicate_patch_elements_merge_into_one() {
    let original = pod(json!([]));
    let patch = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a", "tty": true}]}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "a", "image": "x", "tty": true}])
    );
}

#[test]
fn new_elements_lose_nulls_and_directives() {
    let original = pod(json!([{"name": "a"}]));
    let patch = json!({"spec": {"containers": [{
        "name": "b", "image": null,
        "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": "1"}]
    }]}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "b", "env": [{"name": "X", "value": "1"}]}, {"name": "a"}])
    );
}

// ---------------------------------------------------------------------------------------------
// Primitive merge lists

#[test]
fn finalizers_are_a_set_union() {
    let original = json!({"metadata": {"finalizers": ["a", "b"]}});
    let patch = json!({"metadata": {"finalizers": ["b", "c"]}});
    let result = patched("Namespace", original, patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["a", "b", "c"]));

    // A value the live list lacks goes before the server-only values after it, as upstream.
    let original = json!({"metadata": {"finalizers": ["a", "b"]}});
    let patch = json!({"metadata": {"finalizers": ["c"]}});
    let result = patched("Namespace", original, patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["c", "a", "b"]));

    // Duplicates collapse.
    let original = json!({"metadata": {"finalizers": ["a", "a"]}});
    let patch = json!({"metadata": {"finalizers": ["a", "a"]}});
    let result = patched("Namespace", original, patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["a"]));
}

#[test]
fn node_pod_cidrs_are_a_set_union() {
    let original = json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}});
    let patch = json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}});
    let result = patched("Node", original, patch);
    assert_eq!(result["spec"]["podCIDRs"], json!(["10.0.0.0/24", "fd00::/64"]));
}

#[test]
fn delete_from_primitive_list_removes_every_copy() {
    let original = json!({"metadata": {"finalizers": ["a", "b", "a", "c"]}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "x"]}});
    let result = patched("Pod", original, patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["b", "c"]));
}

#[test]
fn delete_from_primitive_list_never_adds() {
    let original = json!({"metadata": {"name": "p"}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
    assert_eq!(patched("Pod", original.clone(), patch), original);

    let original = json!({"metadata": {"finalizers": []}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
    assert_eq!(patched("Pod", original.clone(), patch), original);
}

#[test]
fn delete_from_primitive_list_also_works_on_untagged_lists() {
    let original = pod(json!([{"name": "a", "args": ["1", "2", "3"]}]));
    let patch = json!({"spec": {"containers": [{"name": "a", "$deleteFromPrimitiveList/args": ["2"]}]}});
    let result = patched("Pod", original, patch);
    assert_eq!(containers_of(&result), &json!([{"name": "a", "args": ["1", "3"]}]));
}

// ---------------------------------------------------------------------------------------------
// $patch

#[test]
fn patch_replace_on_a_map_replaces_it() {
    let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let patch = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}});
    let result = patched("ConfigMap", original, patch);
    assert_eq!(result["metadata"]["labels"], json!({"c": "3"}));

    // At the top level it replaces the whole object.
    let original = json!({"metadata": {"name": "a"}, "data": {"x": "1"}});
    let patch = json!({"$patch": "replace", "metadata": {"name": "b"}});
    assert_eq!(
        patched("ConfigMap", original, patch),
        json!({"metadata": {"name": "b"}})
    );
}

#[test]
fn patch_replace_in_a_list_replaces_the_list() {
    let original = pod(json!([{"name": "a", "image": "a:1"}, {"name": "b"}]));
    let patch = json!({"spec": {"containers": [{"name": "c", "image": "c:1"}, {"$patch": "replace"}]}});
    let result = patched("Pod", original, patch);
    assert_eq!(containers_of(&result), &json!([{"name": "c", "image": "c:1"}]));

    let original = pod(json!([{"name": "a"}]));
    let patch = json!({"spec": {"containers": [{"$patch": "replace"}]}});
    assert_eq!(containers_of(&patched("Pod", original, patch)), &json!([]));
}

#[test]
fn patch_delete_on_a_map_empties_it() {
    // Upstream `handleDirectiveInMergeMap` returns an empty map; the key stays.
    let original = json!({"metadata": {"labels": {"a": "1"}, "name": "cm"}});
    let patch = json!({"metadata": {"labels": {"$patch": "delete"}}});
    let result = patched("ConfigMap", original, patch);
    assert_eq!(result["metadata"], json!({"labels": {}, "name": "cm"}));

    // Where there was nothing, nothing is added.
    let original = json!({"metadata": {"name": "cm"}});
    let patch = json!({"metadata": {"labels": {"$patch": "delete"}}});
    assert_eq!(patched("ConfigMap", original.clone(), patch), original);
}

#[test]
fn patch_delete_in_a_list_removes_every_matching_element() {
    let original = pod(json!([
        {"name": "1"}, {"name": "1"}, {"name": "2", "image": "a"}, {"name": "3"}, {"name": "3"}
    ]));
    let patch = json!({"spec": {"containers": [
        {"name": "1", "$patch": "delete"}, {"name": "3", "$patch": "delete"}
    ]}});
    let result = patched("Pod", original, patch);
    assert_eq!(containers_of(&result), &json!([{"name": "2", "image": "a"}]));

    // Deleting an element that is not there changes nothing; in a new list it vanishes.
    let original = json!({"spec": {}});
    let patch = json!({"spec": {"containers": [
        {"name": "hello"}, {"$patch": "delete", "name": "doesntexist"}
    ]}});
    let result = patched("Pod", original, patch);
    assert_eq!(containers_of(&result), &json!([{"name": "hello"}]));
}

#[test]
fn patch_merge_is_the_default() {
    let original = json!({"metadata": {"labels": {"a": "1"}}});
    let patch = json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}});
    let result = patched("ConfigMap", original, patch);
    assert_eq!(result["metadata"]["labels"], json!({"a": "1", "b": "2"}));

    let original = pod(json!([{"name": "a", "image": "a:1"}]));
    let patch = json!({"spec": {"containers": [
        {"$patch": "merge"}, {"$patch": "merge", "name": "a", "tty": true}
    ]}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "a", "image": "a:1", "tty": true}])
    );
}

#[test]
fn an_unknown_patch_directive_is_an_error_naming_the_path() {
    let error = failed(
        "Deployment",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"$patch": "explode", "name": "a"}]}}}}),
    );
    assert_eq!(
        error.to_string(),
        "spec.template.spec.containers[0]: unknown $patch directive \"explode\""
    );

    let error = failed("ConfigMap", json!({}), json!({"$patch": 1}));
    assert_eq!(error.to_string(), "<root>: unknown $patch directive 1");
}

#[test]
fn pod_disruption_budget_selector_is_replaced() {
    let original = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "minAvailable": 1}});
    let patch = json!({"spec": {"selector": {"matchExpressions": [{"key": "b", "operator": "Exists"}]}}});
    let result = patched("PodDisruptionBudget", original, patch);
    assert_eq!(
        result["spec"],
        json!({"selector": {"matchExpressions": [{"key": "b", "operator": "Exists"}]}, "minAvailable": 1})
    );
}

// ---------------------------------------------------------------------------------------------
// $retainKeys

#[test]
fn retain_keys_clears_the_deployment_strategy() {
    // kubectl apply switching RollingUpdate to Recreate.
    let original = json!({"spec": {"strategy": {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
    }}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let result = patched("Deployment", original, patch);
    assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn retain_keys_clears_a_volume_source() {
    // kubectl apply switching a volume from emptyDir to a configMap.
    let original = json!({"spec": {"template": {"spec": {"volumes": [
        {"name": "cfg", "emptyDir": {}},
        {"name": "other", "emptyDir": {}}
    ]}}}});
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/volumes": [{"name": "cfg"}, {"name": "other"}],
        "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "app"}, "name": "cfg"}]
    }}}});
    let result = patched("Deployment", original, patch);
    assert_eq!(
        result["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "app"}}, {"name": "other", "emptyDir": {}}])
    );
}

#[test]
fn retain_keys_rejects_a_patch_setting_an_unlisted_key() {
    let error = failed(
        "Deployment",
        json!({"spec": {"strategy": {"type": "RollingUpdate"}}}),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}}),
    );
    assert!(matches!(error, StrategicMergeError::InvalidRetainKeys { ref path, .. } if path == "spec.strategy"));

    let error = failed(
        "Deployment",
        json!({"spec": {"strategy": {}}}),
        json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
    );
    assert!(matches!(error, StrategicMergeError::InvalidRetainKeys { .. }));
}

#[test]
fn retain_keys_allows_nulls_and_directives_for_unlisted_keys() {
    let original = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let patch = json!({"spec": {"strategy": {
        "$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null
    }}});
    let result = patched("Deployment", original, patch);
    assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
}

// ---------------------------------------------------------------------------------------------
// $setElementOrder (cases from upstream's "preserve order" tests)

fn names(pod: &Value) -> Vec<String> {
    containers_of(pod)
        .as_array()
        .map(|containers| {
            containers
                .iter()
                .map(|c| c["name"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn order(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|name| json!({"name": name})).collect())
}

#[test]
fn set_element_order_adds_an_item_in_place() {
    let original = pod(json!([{"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": order(&["3", "1", "2"]),
        "containers": [{"name": "3", "value": "3"}]
    }});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([
            {"name": "3", "value": "3"},
            {"name": "1", "other": "a"},
            {"name": "2", "value": "2", "other": "b"}
        ])
    );
}

#[test]
fn set_element_order_adds_several_items() {
    let original = pod(json!([{"name": "1"}, {"name": "2"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": order(&["1", "4", "2", "3"]),
        "containers": [{"name": "4"}, {"name": "3"}]
    }});
    assert_eq!(names(&patched("Pod", original, patch)), ["1", "4", "2", "3"]);
}

#[test]
fn set_element_order_with_a_deletion() {
    let original = pod(json!([{"name": "1"}, {"name": "2"}, {"name": "3"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": order(&["2", "1"]),
        "containers": [{"name": "3", "$patch": "delete"}]
    }});
    assert_eq!(names(&patched("Pod", original, patch)), ["2", "1"]);

    let original = pod(json!([{"name": "1"}, {"name": "2"}, {"name": "3"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": order(&["4", "2", "1"]),
        "containers": [{"name": "4"}, {"name": "3", "$patch": "delete"}]
    }});
    assert_eq!(names(&patched("Pod", original, patch)), ["4", "2", "1"]);
}

#[test]
fn set_element_order_keeps_server_only_items_in_their_place() {
    let cases: [(&[&str], &[&str], &[&str]); 4] = [
        (&["1", "3", "4", "2"], &["4", "2", "3", "1"], &["4", "2", "3", "1"]),
        (
            &["1", "3", "4", "2", "9"],
            &["4", "2", "3", "1"],
            &["4", "2", "3", "1", "9"],
        ),
        (
            &["1", "2", "9", "3", "4"],
            &["2", "1", "4", "3"],
            &["2", "1", "9", "4", "3"],
        ),
        (
            &["1", "2", "7", "9", "8", "3", "4"],
            &["2", "1", "4", "3"],
            &["2", "1", "7", "9", "8", "4", "3"],
        ),
    ];
    for (live, wanted, expected) in cases {
        let original = pod(order(live));
        let patch = json!({"spec": {"$setElementOrder/containers": order(wanted)}});
        assert_eq!(names(&patched("Pod", original, patch)), expected, "live {live:?}");
    }
}

#[test]
fn set_element_order_may_name_items_that_are_not_there() {
    let original = pod(json!([{"name": "1"}, {"name": "3"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": order(&["3", "2", "1"]),
        "containers": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]
    }});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "3", "value": "3"}, {"name": "1", "value": "1"}])
    );
}

#[test]
fn set_element_order_with_duplicates_groups_them() {
    let original = pod(json!([
        {"name": "1"}, {"name": "2", "value": "dup1"}, {"name": "3"}, {"name": "2", "value": "dup2"}, {"name": "4"}
    ]));
    let patch = json!({"spec": {"$setElementOrder/containers": order(&["2", "1", "4", "3", "2"])}});
    let result = patched("Pod", original, patch);
    assert_eq!(
        containers_of(&result),
        &json!([
            {"name": "2", "value": "dup1"}, {"name": "2", "value": "dup2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}
        ])
    );
}

#[test]
fn set_element_order_that_contradicts_the_patch_list_is_an_error() {
    let original = pod(json!([{"name": "1"}, {"name": "3"}, {"name": "2"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": order(&["1", "2", "3"]),
        "containers": [{"name": "3"}, {"name": "1"}]
    }});
    let error = failed("Pod", original, patch);
    assert!(matches!(
        error,
        StrategicMergeError::InvalidSetElementOrder { ref path, .. } if path == "spec.containers"
    ));
}

#[test]
fn set_element_order_on_primitive_lists() {
    let original = json!({"metadata": {"finalizers": ["1", "4", "2"]}});
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["3", "1", "2"], "finalizers": ["3"]}});
    let result = patched("Pod", original, patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["3", "1", "4", "2"]));

    let original = json!({"metadata": {"finalizers": ["1", "2", "3"]}});
    let patch = json!({"metadata": {
        "$deleteFromPrimitiveList/finalizers": ["3"],
        "$setElementOrder/finalizers": ["2", "1"]
    }});
    let result = patched("Pod", original, patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["2", "1"]));

    let original = json!({"metadata": {"finalizers": ["1", "2", "3", "4"]}});
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["1", "2", "4"],
        "$deleteFromPrimitiveList/finalizers": ["3"]
    }});
    let result = patched("Pod", original, patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["1", "2", "4"]));

    let original = json!({"metadata": {"finalizers": ["1", "3"]}});
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}});
    let result = patched("Pod", original, patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["3", "1"]));
}

#[test]
fn set_element_order_for_an_absent_list_takes_the_patch_list() {
    let original = json!({"spec": {}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": order(&["b", "a"]),
        "containers": [{"name": "a"}, {"name": "b"}]
    }});
    // The patch list contradicts the order: upstream rejects it even for a new list.
    assert!(matches!(
        failed("Pod", original.clone(), patch),
        StrategicMergeError::InvalidSetElementOrder { .. }
    ));

    let patch = json!({"spec": {
        "$setElementOrder/containers": order(&["b", "a"]),
        "containers": [{"name": "b"}, {"name": "a", "image": null}]
    }});
    assert_eq!(names(&patched("Pod", original, patch)), ["b", "a"]);
}

// ---------------------------------------------------------------------------------------------
// What real kubectl sends (kubectl-wire.md §7.8, §7.13)

fn statefulset_v1() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "db",
            "namespace": "default",
            "uid": "0b5d7a8e-1111-4c3a-9e21-5f0f3c0d9a01",
            "resourceVersion": "41",
            "generation": 1,
            "labels": {"app": "db"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"v\":1}\n"}
        },
        "spec": {
            "replicas": 2,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "containers": [{
                        "name": "postgres",
                        "image": "postgres:16",
                        "env": [
                            {"name": "POSTGRES_PASSWORD", "value": "secret"},
                            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}
                        ],
                        "ports": [{"containerPort": 5432, "name": "pg", "protocol": "TCP"}],
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst"
                }
            },
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
        },
        "status": {"replicas": 2, "readyReplicas": 2}
    })
}

#[test]
fn kubectl_apply_statefulset_update() {
    let patch = json!({
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"v\":2}\n"},
            "labels": {"tier": "backend"}
        },
        "spec": {
            "replicas": 3,
            "template": {
                "metadata": {"labels": {"tier": "backend"}},
                "spec": {
                    "$setElementOrder/containers": [{"name": "postgres"}],
                    "containers": [{
                        "$setElementOrder/env": [{"name": "POSTGRES_PASSWORD"}],
                        "env": [{"$patch": "delete", "name": "PGDATA"}],
                        "image": "postgres:17",
                        "name": "postgres"
                    }]
                }
            }
        }
    });
    let result = patched("StatefulSet", statefulset_v1(), patch);

    let mut expected = statefulset_v1();
    expected["metadata"]["labels"] = json!({"app": "db", "tier": "backend"});
    expected["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": "{\"v\":2}\n"});
    expected["spec"]["replicas"] = json!(3);
    expected["spec"]["template"]["metadata"]["labels"] = json!({"app": "db", "tier": "backend"});
    let container = &mut expected["spec"]["template"]["spec"]["containers"][0];
    container["image"] = json!("postgres:17");
    container["env"] = json!([{"name": "POSTGRES_PASSWORD", "value": "secret"}]);
    assert_eq!(result, expected);
}

#[test]
fn kubectl_apply_configmap_key_removal() {
    let original = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "old"}},
        "data": {"a": "1", "b": "2", "c": "3"}
    });
    let patch = json!({
        "data": {"a": "10", "b": null},
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "new"}}
    });
    let result = patched("ConfigMap", original, patch);
    assert_eq!(result["data"], json!({"a": "10", "c": "3"}));
    assert_eq!(
        result["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        json!("new")
    );
    assert_eq!(result["metadata"]["name"], json!("cfg"));
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 4},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}
            }
        }
    })
}

#[test]
fn kubectl_set_image() {
    let original = deployment(json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"image": "nginx:1.28", "name": "nginx"}]
    }}}});
    let result = patched("Deployment", original, patch);
    let mut expected = deployment(json!([{"name": "nginx", "image": "nginx:1.28", "ports": [{"containerPort": 80}]}]));
    expected["metadata"] = result["metadata"].clone();
    assert_eq!(result, expected);

    // With two containers kubectl lists both in the order and patches only the one it changes.
    let original = deployment(json!([{"name": "nginx", "image": "nginx:1.27"}, {"name": "log", "image": "fluent:1"}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "log"}],
        "containers": [{"image": "fluent:2", "name": "log"}]
    }}}});
    let result = patched("Deployment", original, patch);
    assert_eq!(
        result["spec"]["template"]["spec"]["containers"],
        json!([{"name": "nginx", "image": "nginx:1.27"}, {"name": "log", "image": "fluent:2"}])
    );
}

#[test]
fn kubectl_rollout_restart() {
    let original = deployment(json!([{"name": "nginx", "image": "nginx:1.27"}]));
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"
    }}}}});
    let result = patched("Deployment", original.clone(), patch);
    let mut expected = original;
    expected["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"});
    assert_eq!(result, expected);
}

#[test]
fn kubectl_apply_service_port_change() {
    let original = json!({
        "metadata": {"name": "db", "labels": {"app": "db"}},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": 5432}],
                 "selector": {"app": "db"}}
    });
    let patch = json!({"spec": {
        "$setElementOrder/ports": [{"port": 5432}, {"port": 9187}],
        "ports": [{"name": "metrics", "port": 9187}]
    }});
    let result = patched("Service", original, patch);
    assert_eq!(
        result["spec"]["ports"],
        json!([
            {"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": 5432},
            {"name": "metrics", "port": 9187}
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Errors and odd shapes

#[test]
fn unsupported_kinds_and_non_objects_are_rejected() {
    assert!(matches!(
        failed("Widget", json!({}), json!({})),
        StrategicMergeError::UnsupportedKind { .. }
    ));
    assert!(!supports("Widget"));
    assert!(matches!(
        failed("Pod", json!({}), json!([1])),
        StrategicMergeError::PatchNotObject { found: "a list" }
    ));
    assert!(matches!(
        failed("Pod", json!("x"), json!({})),
        StrategicMergeError::OriginalNotObject { found: "a string" }
    ));
}

#[test]
fn a_merge_key_element_without_its_key_is_an_error() {
    let error = failed(
        "Deployment",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"image": "y"}]}}}}),
    );
    assert_eq!(
        error,
        StrategicMergeError::MissingMergeKey {
            path: "spec.template.spec.containers[0]".to_owned(),
            key: "name"
        }
    );
    assert_eq!(
        error.to_string(),
        "spec.template.spec.containers[0]: list element does not contain the merge key \"name\""
    );

    // A live element without its key is an error too (upstream checks both).
    let error = failed(
        "Pod",
        pod(json!([{"image": "x"}])),
        json!({"spec": {"containers": [{"name": "a"}]}}),
    );
    assert!(matches!(error, StrategicMergeError::MissingMergeKey { .. }));

    let error = failed(
        "Pod",
        pod(json!([{"name": "a"}])),
        json!({"spec": {"containers": [{"$patch": "delete"}]}}),
    );
    assert!(matches!(error, StrategicMergeError::MissingMergeKey { .. }));
}

#[test]
fn odd_list_shapes_are_errors() {
    let cases = [
        // primitives in a keyed list
        (pod(json!([{"name": "a"}])), json!({"spec": {"containers": ["a"]}})),
        // objects in a primitive merge list
        (
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [{"a": 1}]}}),
        ),
        // mixed element types
        (
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [1]}}),
        ),
        // lists of lists
        (
            json!({"metadata": {"finalizers": [["a"]]}}),
            json!({"metadata": {"finalizers": [["b"]]}}),
        ),
        // null elements
        (
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [null]}}),
        ),
        // directives of the wrong shape
        (
            json!({"metadata": {}}),
            json!({"metadata": {"$setElementOrder/finalizers": "a"}}),
        ),
        (
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": {"a": 1}}}),
        ),
        (
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [{"a": 1}]}}),
        ),
        (
            pod(json!([{"name": "a"}])),
            json!({"spec": {"$setElementOrder/containers": ["a"], "containers": [{"name": "a"}]}}),
        ),
        (
            pod(json!("x")),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}]}}),
        ),
        (
            pod(json!([])),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": {"name": "a"}}}),
        ),
    ];
    for (original, patch) in cases {
        let result = apply(&original, &patch, "Pod");
        assert!(result.is_err(), "{patch} on {original} gave {result:?}");
    }
}

#[test]
fn odd_but_valid_shapes_merge_as_untyped_json() {
    // A map where the schema expects a list, and unknown fields anywhere.
    let original = json!({"spec": {"containers": {"a": {"b": 1}}}, "extra": [1, 2]});
    let patch = json!({"spec": {"containers": {"a": {"c": 2}}}, "extra": [3], "more": {"x": null, "y": [null]}});
    assert_eq!(
        patched("Pod", original, patch),
        json!({"spec": {"containers": {"a": {"b": 1, "c": 2}}}, "extra": [3], "more": {"y": [null]}})
    );
}

/// A tiny deterministic generator for the no-panic sweep below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const KEYS: &[&str] = &[
    "metadata",
    "spec",
    "status",
    "template",
    "containers",
    "initContainers",
    "env",
    "ports",
    "volumes",
    "finalizers",
    "ownerReferences",
    "conditions",
    "name",
    "uid",
    "type",
    "port",
    "containerPort",
    "strategy",
    "labels",
    "data",
    "args",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$setElementOrder/env",
    "$setElementOrder/finalizers",
    "$deleteFromPrimitiveList/finalizers",
    "$deleteFromPrimitiveList/args",
    "$setElementOrder/",
];

const STRINGS: &[&str] = &["a", "b", "replace", "delete", "merge", "name", "type", "x"];

/// A random JSON value; keys come from `KEYS`, directive keys only when `directives` is set
/// (live objects never hold them).
fn random_value(rng: &mut Rng, depth: usize, directives: bool) -> Value {
    let choice = if depth == 0 { rng.below(4) } else { rng.below(7) };
    match choice {
        0 => Value::Null,
        1 => json!(rng.below(3)),
        2 | 3 => json!(STRINGS[rng.below(STRINGS.len())]),
        4 => Value::Bool(rng.below(2) == 0),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth - 1, directives))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(5))
                .map(|_| {
                    let key = KEYS[rng.below(KEYS.len())];
                    let key = if directives { key } else { key.trim_start_matches('$') };
                    (key.to_owned(), random_value(rng, depth - 1, directives))
                })
                .collect(),
        ),
    }
}

#[test]
fn random_shapes_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let kinds = ["Pod", "Deployment", "CronJob", "Node", "Service", "ConfigMap"];
    let mut applied = 0;
    for _ in 0..4000 {
        let original = random_value(&mut rng, 5, false);
        let patch = random_value(&mut rng, 5, true);
        let kind = kinds[rng.below(kinds.len())];
        if let Ok(result) = apply(&original, &patch, kind) {
            applied += 1;
            if patch.is_object() {
                assert_no_directives(&result);
            }
        }
    }
    assert!(
        applied > 100,
        "the sweep should exercise successful merges too ({applied})"
    );
}

#[test]
fn deep_random_shapes_never_panic_in_real_paths() {
    // Shapes rooted at a pod template, so the typed paths are exercised.
    let mut rng = Rng(0x0dd5_4a9e_0000_0002);
    for _ in 0..2000 {
        let inner_original = random_value(&mut rng, 4, false);
        let inner_patch = random_value(&mut rng, 4, true);
        let original = json!({"spec": {"template": {"spec": {"containers": [inner_original]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [inner_patch]}}}});
        if let Ok(result) = apply(&original, &patch, "Deployment") {
            assert_no_directives(&result);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The schema table

const REQUIRED_KINDS: &[&str] = &[
    "Namespace",
    "Pod",
    "PodTemplate",
    "Service",
    "Endpoints",
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Node",
    "Event",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "LimitRange",
    "ResourceQuota",
    "ReplicationController",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "ControllerRevision",
    "Job",
    "CronJob",
    "EndpointSlice",
    "Lease",
    "StorageClass",
    "Ingress",
    "IngressClass",
    "NetworkPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "CustomResourceDefinition",
];

#[test]
fn every_required_kind_is_supported_with_object_meta() {
    for kind in REQUIRED_KINDS {
        assert!(supports(kind), "{kind}");
        let owners = patch_meta(kind, &["metadata", "ownerReferences"]).map(|m| m.strategy);
        assert_eq!(owners, Some(ListStrategy::Merge { key: Some("uid") }), "{kind}");
        let finalizers = patch_meta(kind, &["metadata", "finalizers"]).map(|m| m.strategy);
        assert_eq!(finalizers, Some(ListStrategy::Merge { key: None }), "{kind}");
    }
    for kind in ["Widget", "", "pod", "Deployments"] {
        assert!(!supports(kind), "{kind}");
    }
}

#[test]
fn the_table_records_every_tagged_field() {
    use ListStrategy::{Atomic, Merge};
    let by = |key| Merge { key: Some(key) };
    let set = Merge { key: None };
    #[rustfmt::skip]
    let cases: &[(&str, &str, ListStrategy, bool)] = &[
        ("Pod", "spec.containers", by("name"), false),
        ("Pod", "spec.initContainers", by("name"), false),
        ("Pod", "spec.ephemeralContainers", by("name"), false),
        ("Pod", "spec.volumes", by("name"), true),
        ("Pod", "spec.imagePullSecrets", by("name"), false),
        ("Pod", "spec.hostAliases", by("ip"), false),
        ("Pod", "spec.topologySpreadConstraints", by("topologyKey"), false),
        ("Pod", "spec.schedulingGates", by("name"), false),
        ("Pod", "spec.resourceClaims", by("name"), true),
        ("Pod", "spec.containers.ports", by("containerPort"), false),
        ("Pod", "spec.containers.env", by("name"), false),
        ("Pod", "spec.containers.volumeMounts", by("mountPath"), false),
        ("Pod", "spec.containers.volumeDevices", by("devicePath"), false),
        ("Pod", "spec.initContainers.env", by("name"), false),
        ("Pod", "spec.ephemeralContainers.ports", by("containerPort"), false),
        ("Pod", "spec.ephemeralContainers.env", by("name"), false),
        ("Pod", "spec.ephemeralContainers.volumeMounts", by("mountPath"), false),
        ("Pod", "spec.ephemeralContainers.volumeDevices", by("devicePath"), false),
        ("Pod", "spec.volumes.ephemeral.volumeClaimTemplate.metadata.finalizers", set, false),
        ("Pod", "status.conditions", by("type"), false),
        ("Pod", "status.hostIPs", by("ip"), false),
        ("Pod", "status.podIPs", by("ip"), false),
        ("Pod", "status.resourceClaimStatuses", by("name"), true),
        ("Pod", "status.containerStatuses", Atomic, false),
        ("Pod", "status.containerStatuses.volumeMounts", by("mountPath"), false),
        ("Pod", "status.initContainerStatuses.allocatedResourcesStatus", by("name"), false),
        ("PodTemplate", "template.spec.containers.env", by("name"), false),
        ("PodTemplate", "template.metadata.ownerReferences", by("uid"), false),
        ("Service", "spec.ports", by("port"), false),
        ("Service", "status.conditions", by("type"), false),
        ("ServiceAccount", "secrets", by("name"), false),
        ("Node", "spec.podCIDRs", set, false),
        ("Node", "status.conditions", by("type"), false),
        ("Node", "status.addresses", by("type"), false),
        ("Namespace", "status.conditions", by("type"), false),
        ("PersistentVolumeClaim", "status.conditions", by("type"), false),
        ("ReplicationController", "spec.template.spec.containers", by("name"), false),
        ("ReplicationController", "status.conditions", by("type"), false),
        ("ComponentStatus", "conditions", by("type"), false),
        ("Deployment", "spec.strategy", set, true),
        ("Deployment", "spec.template.spec.volumes", by("name"), true),
        ("Deployment", "spec.template.spec.containers.volumeMounts", by("mountPath"), false),
        ("Deployment", "status.conditions", by("type"), false),
        ("ReplicaSet", "spec.template.spec.containers", by("name"), false),
        ("ReplicaSet", "status.conditions", by("type"), false),
        ("DaemonSet", "spec.template.spec.containers", by("name"), false),
        ("DaemonSet", "status.conditions", by("type"), false),
        ("StatefulSet", "spec.template.spec.containers", by("name"), false),
        ("StatefulSet", "spec.volumeClaimTemplates", Atomic, false),
        ("StatefulSet", "spec.volumeClaimTemplates.metadata.finalizers", set, false),
        ("StatefulSet", "status.conditions", by("type"), false),
        ("Job", "spec.template.spec.containers", by("name"), false),
        ("Job", "status.conditions", by("type"), false),
        ("CronJob", "spec.jobTemplate.metadata.finalizers", set, false),
        ("CronJob", "spec.jobTemplate.spec.template.spec.containers.env", by("name"), false),
        ("HorizontalPodAutoscaler", "status.conditions", by("type"), false),
        ("PodDisruptionBudget", "spec.selector", Atomic, false),
        ("PodDisruptionBudget", "status.conditions", by("type"), false),
        ("ValidatingWebhookConfiguration", "webhooks", by("name"), false),
        ("ValidatingWebhookConfiguration", "webhooks.matchConditions", by("name"), false),
        ("MutatingWebhookConfiguration", "webhooks.matchConditions", by("name"), false),
        ("ValidatingAdmissionPolicy", "spec.matchConditions", by("name"), false),
        ("ValidatingAdmissionPolicy", "spec.variables", by("name"), false),
        ("FlowSchema", "status.conditions", by("type"), false),
        ("PriorityLevelConfiguration", "status.conditions", by("type"), false),
        ("CSINode", "spec.drivers", by("name"), false),
        ("ServiceCIDR", "status.conditions", by("type"), false),
        ("CustomResourceDefinition", "spec.versions", Atomic, false),
        ("CustomResourceDefinition", "spec.versions.schema.openAPIV3Schema.x-kubernetes-validations", by("rule"), false),
        ("CustomResourceDefinition", "spec.versions.schema.openAPIV3Schema.properties.spec.items.x-kubernetes-validations", by("rule"), false),
    ];
    for (kind, path, strategy, retain_keys) in cases {
        let segments: Vec<&str> = path.split('.').collect();
        let meta = patch_meta(kind, &segments);
        assert_eq!(meta.map(|m| m.strategy), Some(*strategy), "{kind} {path}");
        assert_eq!(meta.map(|m| m.retain_keys), Some(*retain_keys), "{kind} {path}");
    }
}

#[test]
fn untagged_fields_have_no_metadata() {
    for (kind, path) in [
        ("Pod", "spec.tolerations"),
        ("Pod", "spec.containers.envFrom"),
        ("Pod", "spec.containers.args"),
        ("Pod", "metadata.labels"),
        ("Deployment", "spec.selector"),
        ("Service", "spec.selector"),
        ("Endpoints", "subsets"),
        ("EndpointSlice", "endpoints"),
        ("CustomResourceDefinition", "status.conditions"),
        ("Nope", "spec"),
    ] {
        let segments: Vec<&str> = path.split('.').collect();
        assert_eq!(patch_meta(kind, &segments), None, "{kind} {path}");
    }
    assert_eq!(patch_meta("Pod", &[]), None);
}

#[test]
fn pod_spec_is_one_type_reached_from_every_workload() {
    for (kind, path) in [
        ("Pod", "spec"),
        ("PodTemplate", "template.spec"),
        ("ReplicationController", "spec.template.spec"),
        ("Deployment", "spec.template.spec"),
        ("ReplicaSet", "spec.template.spec"),
        ("StatefulSet", "spec.template.spec"),
        ("DaemonSet", "spec.template.spec"),
        ("Job", "spec.template.spec"),
        ("CronJob", "spec.jobTemplate.spec.template.spec"),
    ] {
        let segments: Vec<&str> = path.split('.').collect();
        let meta = patch_meta(kind, &segments);
        assert_eq!(meta.and_then(|m| m.type_name), Some("PodSpec"), "{kind} {path}");
    }
    assert_eq!(
        patch_meta("Pod", &["spec", "containers"]).and_then(|m| m.type_name),
        Some("Container")
    );
}
