//! Skiff's scheduler, an API client like kube-scheduler. It keeps a cache of nodes and the pods
//! on them from watches, and for each pending pod runs kube-scheduler's default filters
//! (unschedulable, taints/tolerations, node affinity and `nodeSelector`, host ports, resources,
//! volume binding and volume node affinity, topology spread, pod affinity/anti-affinity) over an
//! adaptive sample of nodes, scores the feasible ones (least allocated, balanced allocation,
//! `PreferNoSchedule` taints, preferred node and pod affinity, `ScheduleAnyway` spread), and
//! binds through the `pods/binding` subresource. Claims of `WaitForFirstConsumer` classes are
//! provisioned on the chosen node before the pod is bound. A pod that fits nowhere gets
//! `PodScheduled=False`/`Unschedulable` with kube's message and a `FailedScheduling` event, and is
//! retried with backoff when the cluster changes.
//!
//! Not yet: priority preemption (pods are ordered by priority, but none are evicted for them).

mod framework;
pub mod quantity;
mod scheduler;
mod selectors;

pub use framework::{feasible_nodes_to_find, schedule, Cache, Decision, NodeInfo, Objects, PodInfo, Resources};
pub use scheduler::run;
