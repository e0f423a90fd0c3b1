//! Field errors, as Kubernetes reports them in an `Invalid` status: one cause per bad field.

use std::fmt;

use serde_json::Value;

/// The kind of a field error (`field.ErrorType` upstream).
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorType {
    Required,
    Invalid(Value),
    NotSupported(Value, Vec<String>),
    Duplicate(Value),
    Forbidden,
    TooLong(Value, usize),
    TypeInvalid(Value),
    NotFound(Value),
}

/// One invalid field: its path (`spec.containers[0].image`), what is wrong, and a detail.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: ErrorType,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorType::Required,
            detail: detail.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorType::Invalid(value.into()),
            detail: detail.into(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorType::Forbidden,
            detail: detail.into(),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, valid: &[&str]) -> Self {
        Self {
            field: field.into(),
            kind: ErrorType::NotSupported(value.into(), valid.iter().map(|s| s.to_string()).collect()),
            detail: String::new(),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorType::Duplicate(value.into()),
            detail: String::new(),
        }
    }
    pub fn too_long(field: impl Into<String>, value: impl Into<Value>, max: usize) -> Self {
        Self {
            field: field.into(),
            kind: ErrorType::TooLong(value.into(), max),
            detail: String::new(),
        }
    }
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorType::NotFound(value.into()),
            detail: String::new(),
        }
    }
    pub fn type_invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorType::TypeInvalid(value.into()),
            detail: detail.into(),
        }
    }

    /// The `reason` of the status cause (`FieldValueRequired`, …).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid(_) => "FieldValueInvalid",
            ErrorType::NotSupported(..) => "FieldValueNotSupported",
            ErrorType::Duplicate(_) => "FieldValueDuplicate",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong(..) => "FieldValueTooLong",
            ErrorType::TypeInvalid(_) => "FieldValueTypeInvalid",
            ErrorType::NotFound(_) => "FieldValueNotFound",
        }
    }

    /// The message without the field path, as in a status cause.
    pub fn body(&self) -> String {
        let with_detail = |s: String| {
            if self.detail.is_empty() {
                s
            } else {
                format!("{s}: {}", self.detail)
            }
        };
        match &self.kind {
            ErrorType::Required => with_detail("Required value".into()),
            ErrorType::Forbidden => with_detail("Forbidden".into()),
            ErrorType::Invalid(v) => with_detail(format!("Invalid value: {}", show(v))),
            ErrorType::TypeInvalid(v) => with_detail(format!("Invalid value: {}", show(v))),
            ErrorType::Duplicate(v) => with_detail(format!("Duplicate value: {}", show(v))),
            ErrorType::NotFound(v) => with_detail(format!("Not found: {}", show(v))),
            ErrorType::TooLong(_, max) => with_detail(format!("Too long: may not be more than {max} bytes")),
            ErrorType::NotSupported(v, valid) => {
                let quoted: Vec<String> = valid.iter().map(|s| format!("\"{s}\"")).collect();
                with_detail(format!(
                    "Unsupported value: {}: supported values: {}",
                    show(v),
                    quoted.join(", ")
                ))
            }
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Upstream's aggregate formatting: one error plain, several in `[a, b]`.
pub fn aggregate(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Builds child paths the way upstream's `field.Path` prints them.
#[derive(Clone, Debug, Default)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{}", self.0, name))
        }
    }
    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{}]", self.0, i))
    }
    pub fn key(&self, k: &str) -> Self {
        Path(format!("{}[{}]", self.0, k))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Path> for String {
    fn from(p: &Path) -> String {
        p.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_upstream_shapes() {
        let e = FieldError::invalid(
            "metadata.name",
            "Bad_Name",
            "a lowercase RFC 1123 subdomain must consist of ...",
        );
        assert_eq!(
            e.to_string(),
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of ..."
        );
        let r = FieldError::required("spec.containers[0].image", "");
        assert_eq!(r.to_string(), "spec.containers[0].image: Required value");
        assert_eq!(
            aggregate(std::slice::from_ref(&r)),
            "spec.containers[0].image: Required value"
        );
        assert_eq!(aggregate(&[r.clone(), r]).matches(", ").count(), 1);
        let ns = FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "NodePort"]);
        assert_eq!(
            ns.body(),
            "Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\""
        );
    }
}
