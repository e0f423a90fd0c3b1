//! Label selectors (equality- and set-based) and field selectors, parsed from the query string
//! forms Kubernetes clients send and matched against JSON objects.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn label_of<'a>(labels: &'a Value, key: &str) -> Option<&'a str> {
    labels.get(key).and_then(Value::as_str)
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        match self {
            Requirement::Eq(k, v) => label_of(labels, k) == Some(v),
            Requirement::NotEq(k, v) => label_of(labels, k) != Some(v),
            Requirement::In(k, vs) => label_of(labels, k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label_of(labels, k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label_of(labels, k).is_some(),
            Requirement::DoesNotExist(k) => label_of(labels, k).is_none(),
        }
    }
}

impl LabelSelector {
    /// Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            // Split off one requirement: up to a comma that is not inside parentheses.
            let mut depth = 0;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let part = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("").trim();
            if part.is_empty() {
                return Err(format!("invalid label selector {s:?}: empty requirement"));
            }
            reqs.push(Self::parse_requirement(part).map_err(|e| format!("unable to parse requirement: {e}"))?);
        }
        Ok(LabelSelector(reqs))
    }

    fn parse_requirement(p: &str) -> Result<Requirement, String> {
        let check_key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            let mut errs = Vec::new();
            if k.is_empty() {
                return Err("key: Invalid value: \"\": name part must be non-empty".into());
            }
            crate::validation::validate_qualified_key(k, &mut errs);
            match errs.first() {
                Some(e) => Err(format!("key: {}", e.body())),
                None => Ok(k.to_string()),
            }
        };
        let check_val = |v: &str| -> Result<String, String> {
            let v = v.trim();
            if crate::validation::is_label_value(v) {
                Ok(v.to_string())
            } else {
                Err(format!("values[0][key]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"))
            }
        };
        if let Some(k) = p.strip_prefix('!') {
            return Ok(Requirement::DoesNotExist(check_key(k)?));
        }
        for (op, neg) in [(" notin ", true), (" in ", false)] {
            if let Some(idx) = p.find(op) {
                let key = check_key(&p[..idx])?;
                let set = p[idx + op.len()..].trim();
                let inner = set
                    .strip_prefix('(')
                    .and_then(|x| x.strip_suffix(')'))
                    .ok_or_else(|| format!("found '{set}', expected: '('"))?;
                let vals = inner.split(',').map(check_val).collect::<Result<Vec<_>, _>>()?;
                return Ok(if neg {
                    Requirement::NotIn(key, vals)
                } else {
                    Requirement::In(key, vals)
                });
            }
        }
        if let Some((k, v)) = p.split_once("!=") {
            return Ok(Requirement::NotEq(check_key(k)?, check_val(v)?));
        }
        if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            return Ok(Requirement::Eq(check_key(k)?, check_val(v)?));
        }
        if p.contains(['<', '>', '(', ')', ' ']) {
            return Err(format!("found '{p}', expected: identifier"));
        }
        Ok(Requirement::Exists(check_key(p)?))
    }

    /// From a `metav1.LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if let Some(ml) = v["matchLabels"].as_object() {
            for (k, val) in ml {
                reqs.push(Requirement::Eq(k.clone(), val.as_str().unwrap_or("").to_string()));
            }
        }
        if let Some(exprs) = v["matchExpressions"].as_array() {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or("").to_string();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let op = e["operator"].as_str().unwrap_or("");
                reqs.push(match op {
                    "In" | "NotIn" if values.is_empty() => {
                        return Err(format!(
                            "values: Required value: must be specified when `operator` is '{op}'"
                        ))
                    }
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => return Err(format!("\"{other}\" is not a valid label selector operator")),
                });
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Does an object's `metadata.labels` (or a labels map) satisfy every requirement?
    pub fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    /// The `a=b,c in (d)` string form (as `status.selector` of a Scale).
    pub fn to_query(&self) -> String {
        self.0
            .iter()
            .map(|r| match r {
                Requirement::Eq(k, v) => format!("{k}={v}"),
                Requirement::NotEq(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A field selector: `metadata.name=web,status.phase!=Running`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            out.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `metadata.name=` if the selector pins one name.
    pub fn exact_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, eq, _)| k == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    /// Check every field is one the kind supports; the error is the upstream message.
    pub fn check_supported(&self, group: &str, kind: &str, extra: &[String]) -> Result<(), String> {
        for (k, _, _) in &self.0 {
            if !supported_field(group, kind, k) && !extra.iter().any(|e| e == k) {
                return Err(format!("field label not supported: {k}"));
            }
        }
        Ok(())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(k, eq, v)| (field_value(obj, k).as_deref() == Some(v.as_str())) == *eq)
    }

    /// Match against pre-extracted field values (`get` returns a field's value, `""` if unset).
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> &'a str) -> bool {
        self.0.iter().all(|(k, eq, v)| (get(k) == v.as_str()) == *eq)
    }
}

/// Every field path some kind supports in field selectors (beyond metadata.name/namespace):
/// what an index of selectable fields must extract.
pub const INDEXED_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "spec.unschedulable",
    "status.replicas",
    "status.successful",
    "spec.signerName",
];

fn supported_field(group: &str, kind: &str, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    let extra: &[&str] = match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest") => &["spec.signerName"],
        _ => &[],
    };
    extra.contains(&field)
}

/// The string value of a dotted field path, as field selectors compare it. Missing strings are
/// `""`, missing booleans `false` (as upstream's field sets do).
pub fn field_value(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(next) => cur = next,
            None => return Some(String::new()),
        }
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_matches_set_based() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (prod, staging),!legacy,track").expect("parses");
        assert_eq!(s.0.len(), 5);
        assert!(s.matches(&json!({"app": "web", "env": "prod", "track": "x"})));
        assert!(!s.matches(&json!({"app": "web", "env": "dev", "track": "x"})));
        assert!(!s.matches(&json!({"app": "web", "env": "prod", "track": "x", "legacy": "1"})));
        assert!(!s.matches(&json!({"app": "web", "env": "prod"})));
        assert_eq!(
            LabelSelector::parse("a notin (b)").expect("notin").to_query(),
            "a notin (b)"
        );
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("Bad Key=1").is_err());
        assert!(LabelSelector::parse("").expect("empty").is_empty());
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse("metadata.name=p,status.phase!=Pending,spec.nodeName==n1").expect("parses");
        assert!(f.matches(&pod));
        assert_eq!(f.exact_name(), Some("p"));
        assert!(f.check_supported("", "Pod", &[]).is_ok());
        assert_eq!(
            FieldSelector::parse("spec.foo=1")
                .expect("parses")
                .check_supported("", "Pod", &[]),
            Err("field label not supported: spec.foo".into())
        );
        // A missing field compares as empty.
        assert!(FieldSelector::parse("spec.nodeName=")
            .expect("parses")
            .matches(&json!({"spec": {}})));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
