//! Out of rotation before the stop: a terminating pod that is an endpoint of a Service keeps
//! running until no EndpointSlice lists it as ready any more, and then for [`SETTLE`] so every
//! node's proxy has dropped it, before its preStop hooks and SIGTERM — within half its grace
//! period ([`budget`]). Without this, a server that exits at once on SIGTERM refuses the
//! connections that other nodes still send it for the moment their rules lag behind (in
//! Kubernetes users paper over that race with a `preStop` sleep).
//!
//! A pod that serves no Service is not held: it is in no EndpointSlice. The slices come from
//! the watch the node's service proxy already keeps ([`crate::proxy`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

/// How long the proxies of all nodes are given to drop an endpoint once this node has seen it
/// leave the rotation: each applies a change within milliseconds of hearing of it, and Skiff
/// promises unready endpoints leave the rotation within a second.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The longest a pod is held (and at most half its grace period, the rest is SIGTERM's).
pub const MAX_HOLD: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(20);

/// How long a pod with grace period `grace` may be held.
pub fn budget(grace: Duration) -> Duration {
    (grace / 2).min(MAX_HOLD)
}

/// Where a pod stands in the Services' rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// In no EndpointSlice: it serves no Service.
    Absent,
    /// Listed as ready somewhere: traffic may still be sent to it.
    Ready,
    /// Listed, but nowhere as ready (terminating or unready).
    Out,
}

/// The pod `uid` (at `ip`) in namespace `ns`, as `slices` list it. An endpoint is the pod's
/// by its `targetRef`, or by address when it has none.
pub fn rotation(slices: &[Arc<EndpointSlice>], ns: &str, uid: &str, ip: Option<&str>) -> Rotation {
    let mut listed = false;
    for s in slices.iter().filter(|s| s.namespace().as_deref() == Some(ns)) {
        for ep in &s.endpoints {
            let mine = match ep.target_ref.as_ref().and_then(|t| t.uid.as_deref()) {
                Some(u) => u == uid,
                None => ip.is_some_and(|ip| ep.addresses.iter().any(|a| a == ip)),
            };
            if !mine {
                continue;
            }
            listed = true;
            // Kubernetes: a missing `ready` is ready.
            if ep.conditions.as_ref().and_then(|c| c.ready) != Some(false) {
                return Rotation::Ready;
            }
        }
    }
    if listed {
        Rotation::Out
    } else {
        Rotation::Absent
    }
}

/// Holds the terminating `pod` until it is out of every Service's rotation on every node (see
/// the module docs), for at most `budget`. Returns how long it held it.
pub async fn out_of_rotation(slices: &Store<EndpointSlice>, pod: &Pod, budget: Duration) -> Duration {
    let started = Instant::now();
    if budget.is_zero() {
        return Duration::ZERO;
    }
    let ns = pod.namespace().unwrap_or_default();
    let uid = pod.uid().unwrap_or_default();
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let now = || rotation(&slices.state(), &ns, &uid, ip.as_deref());
    if now() == Rotation::Absent {
        return started.elapsed();
    }
    while now() == Rotation::Ready {
        if started.elapsed() + POLL >= budget {
            tracing::warn!(pod = %pod.name_any(), namespace = %ns, "still a ready endpoint after {budget:?}; stopping it anyway");
            return started.elapsed();
        }
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(SETTLE.min(budget.saturating_sub(started.elapsed()))).await;
    tracing::debug!(pod = %pod.name_any(), namespace = %ns, held_ms = started.elapsed().as_millis() as u64, "out of rotation");
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-skiff", "namespace": "default"},
                "addressType": "IPv4", "endpoints": endpoints}))
            .expect("slice"),
        )
    }

    #[test]
    fn a_pod_is_in_rotation_while_any_slice_lists_it_ready() {
        let ready = slice(serde_json::json!([
            {"addresses": ["10.42.1.5"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "uid": "u1"}},
            {"addresses": ["10.42.1.6"], "conditions": {"ready": false, "terminating": true}, "targetRef": {"kind": "Pod", "uid": "u2"}},
            {"addresses": ["10.42.1.7"]}
        ]));
        let slices = [ready];
        assert_eq!(rotation(&slices, "default", "u1", Some("10.42.1.5")), Rotation::Ready);
        assert_eq!(rotation(&slices, "default", "u2", Some("10.42.1.6")), Rotation::Out);
        assert_eq!(
            rotation(&slices, "default", "u3", Some("10.42.1.7")),
            Rotation::Ready,
            "by address, ready when unsaid"
        );
        assert_eq!(rotation(&slices, "default", "u4", Some("10.42.1.8")), Rotation::Absent);
        assert_eq!(
            rotation(&slices, "other", "u1", Some("10.42.1.5")),
            Rotation::Absent,
            "another namespace"
        );
    }

    #[test]
    fn half_the_grace_period_at_most_five_seconds() {
        assert_eq!(budget(Duration::from_secs(30)), MAX_HOLD);
        assert_eq!(budget(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(budget(Duration::ZERO), Duration::ZERO);
    }
}
