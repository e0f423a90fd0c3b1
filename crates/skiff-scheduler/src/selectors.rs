//! Label selectors (pod affinity, topology spread) and node selector terms (node affinity,
//! volume node affinity) as the scheduler evaluates them. Written here rather than shared with
//! the API server's string selectors: these come typed from k8s-openapi and run millions of
//! times per second, so they are matched against label maps directly.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A compiled `LabelSelector`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<(String, Op)>,
    /// A nil selector (or one with an invalid operator) selects nothing.
    nothing: bool,
}

impl Selector {
    /// Kubernetes semantics: `None` selects nothing, `{}` selects everything.
    pub fn new(sel: Option<&LabelSelector>) -> Selector {
        let Some(sel) = sel else {
            return Selector::nothing();
        };
        let mut reqs: Vec<(String, Op)> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Op::In(vec![v.clone()])))
            .collect();
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return Selector::nothing(),
            };
            reqs.push((e.key.clone(), op));
        }
        Selector { reqs, nothing: false }
    }

    pub fn nothing() -> Selector {
        Selector {
            reqs: Vec::new(),
            nothing: true,
        }
    }

    /// Add `key in (value)` (matchLabelKeys) or `key notin (value)` (mismatchLabelKeys).
    pub fn require(&mut self, key: &str, value: &str, equal: bool) {
        let v = vec![value.to_string()];
        self.reqs
            .push((key.to_string(), if equal { Op::In(v) } else { Op::NotIn(v) }));
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing
            && self.reqs.iter().all(|(k, op)| {
                let v = labels.get(k);
                match op {
                    Op::In(vals) => v.is_some_and(|v| vals.contains(v)),
                    Op::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
                    Op::Exists => v.is_some(),
                    Op::DoesNotExist => v.is_none(),
                }
            })
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt compare one integer value; anything else does not match.
        "Gt" | "Lt" => match (value.and_then(number), values.first().and_then(|s| number(s))) {
            (Some(v), Some(bound)) if values.len() == 1 => {
                if r.operator == "Gt" {
                    v > bound
                } else {
                    v < bound
                }
            }
            _ => false,
        },
        _ => false,
    }
}

/// One node selector term: all its expressions (on labels) and fields (`metadata.name`) hold.
/// An empty term matches no node, as in Kubernetes.
pub fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &Labels) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node_name);
            r.key == "metadata.name" && requirement_matches(r, value)
        })
}

/// A list of terms is satisfied when any one of them is.
pub fn terms_match(terms: &[NodeSelectorTerm], node_name: &str, labels: &Labels) -> bool {
    terms.iter().any(|t| term_matches(t, node_name, labels))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_semantics() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(!Selector::new(None).matches(&l), "nil selects nothing");
        assert!(
            Selector::new(Some(&LabelSelector::default())).matches(&l),
            "{{}} selects all"
        );
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]},
                                 {"key": "canary", "operator": "DoesNotExist"},
                                 {"key": "env", "operator": "NotIn", "values": ["prod"]}]
        }))
        .unwrap();
        let s = Selector::new(Some(&sel));
        assert!(s.matches(&l));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "front"), ("canary", "1")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "front"), ("env", "prod")])));
        let bad: LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})).unwrap();
        assert!(!Selector::new(Some(&bad)).matches(&l));
        let mut s = Selector::new(Some(&LabelSelector::default()));
        s.require("app", "web", true);
        assert!(s.matches(&l));
        s.require("tier", "front", false);
        assert!(!s.matches(&l));
    }

    #[test]
    fn node_selector_terms() {
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        let term = |v: serde_json::Value| -> NodeSelectorTerm { serde_json::from_value(v).unwrap() };
        assert!(
            !term_matches(&term(json!({})), "n1", &l),
            "an empty term matches nothing"
        );
        assert!(term_matches(
            &term(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]})),
            "n1",
            &l
        ));
        assert!(term_matches(
            &term(json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]})),
            "n1",
            &l
        ));
        assert!(!term_matches(
            &term(json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]})),
            "n1",
            &l
        ));
        assert!(term_matches(
            &term(json!({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["x"]}]})),
            "n1",
            &l
        ));
        let by_name = term(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}));
        assert!(term_matches(&by_name, "n1", &l));
        assert!(!term_matches(&by_name, "n2", &l));
        let terms = vec![
            term(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]})),
            by_name,
        ];
        assert!(terms_match(&terms, "n1", &l), "terms are ORed");
    }
}
