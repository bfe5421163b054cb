//! The botocore service models, as the specification of each operation's input and
//! output.
//!
//! A model file (`models/ecs-2014-11-13.json`, …) is parsed once into a
//! [`ServiceModel`] whose shapes refer to each other by index; checking a JSON value
//! against an operation then walks the value and the shapes together without
//! allocating unless something is wrong, so it is cheap enough to run on every request.

use std::collections::{HashMap, HashSet};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::AwsError;

/// Why a model file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is not JSON of the botocore model layout.
    #[error("the service model is not valid botocore JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A shape refers to a shape the model does not define.
    #[error("shape {from} refers to undefined shape {to}")]
    UnknownShape {
        /// The referring shape or operation.
        from: String,
        /// The missing shape.
        to: String,
    },
    /// A shape has a type this module does not know, or lacks a part its type needs.
    #[error("shape {shape} is malformed: {reason}")]
    MalformedShape {
        /// The shape.
        shape: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What is wrong with one place of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum ViolationKind {
    /// The operation is not in the model.
    UnknownOperation,
    /// A structure has a member its shape does not declare.
    UnknownMember,
    /// A required member is absent (or `null`).
    MissingRequired,
    /// The JSON type is not the shape's.
    WrongType {
        /// The shape type expected, e.g. `integer`.
        expected: &'static str,
    },
    /// A string is not one of its shape's enum values.
    EnumValue {
        /// The value sent.
        value: String,
    },
    /// A string's length, a list's or map's count, or a blob's size is out of bounds.
    Length {
        /// The shape's minimum.
        min: Option<f64>,
        /// The shape's maximum.
        max: Option<f64>,
        /// The actual length.
        actual: usize,
    },
    /// A number is out of bounds.
    Range {
        /// The shape's minimum.
        min: Option<f64>,
        /// The shape's maximum.
        max: Option<f64>,
        /// The actual value.
        actual: f64,
    },
    /// A union structure does not have exactly one member set.
    UnionMembers {
        /// How many members were set.
        set: usize,
    },
}

/// One problem found in a value, with where it is (e.g.
/// `containerDefinitions[0].portMappings[1].hostPort`; map entries read `name["key"]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The path from the top of the value; empty for the value itself.
    pub path: String,
    /// What is wrong.
    pub kind: ViolationKind,
}

/// A message in the style of AWS's validation messages.
impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "request"
        } else {
            self.path.as_str()
        };
        let bound = |b: &Option<f64>| b.map(|b| b.to_string()).unwrap_or_default();
        match &self.kind {
            ViolationKind::MissingRequired => write!(f, "{path} is required but was not given."),
            ViolationKind::WrongType { expected } => {
                write!(f, "{path} must be of type {expected}.")
            }
            ViolationKind::EnumValue { value } => write!(f, "Invalid value {value:?} for {path}."),
            ViolationKind::Length { min, max, actual } => write!(
                f,
                "{path} has length {actual}, outside the allowed range {}..{}.",
                bound(min),
                bound(max)
            ),
            ViolationKind::Range { min, max, actual } => write!(
                f,
                "{path} is {actual}, outside the allowed range {}..{}.",
                bound(min),
                bound(max)
            ),
            other => write!(f, "{path} is invalid: {other:?}"),
        }
    }
}

/// An error an operation declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorName {
    /// The error shape's name.
    pub shape: String,
    /// The code on the wire: the shape's `error.code` when present, else its name.
    pub code: String,
    /// The HTTP status the model gives, if any.
    pub http_status: Option<u16>,
    /// Whether the model marks it a client (sender) fault.
    pub sender_fault: bool,
}

type ShapeId = usize;

#[derive(Debug, Clone, Copy, Default)]
struct Bounds {
    min: Option<f64>,
    max: Option<f64>,
}

impl Bounds {
    fn admits(&self, x: f64) -> bool {
        self.min.is_none_or(|m| x >= m) && self.max.is_none_or(|m| x <= m)
    }
}

#[derive(Debug)]
enum ShapeKind {
    Structure {
        members: HashMap<String, ShapeId>,
        required: Vec<String>,
        union: bool,
    },
    /// A free-form JSON document.
    Document,
    List {
        member: ShapeId,
        bounds: Bounds,
    },
    Map {
        key: ShapeId,
        value: ShapeId,
        bounds: Bounds,
    },
    String {
        enum_values: Option<HashSet<String>>,
        bounds: Bounds,
    },
    Integer {
        bounds: Bounds,
    },
    Long {
        bounds: Bounds,
    },
    Boolean,
    Double {
        bounds: Bounds,
    },
    Timestamp,
    Blob {
        bounds: Bounds,
    },
}

#[derive(Debug)]
struct Shape {
    name: String,
    kind: ShapeKind,
    error: Option<RawErrorInfo>,
}

#[derive(Debug)]
struct Operation {
    input: Option<ShapeId>,
    output: Option<ShapeId>,
    errors: Vec<ShapeId>,
}

/// A parsed botocore service model.
#[derive(Debug)]
pub struct ServiceModel {
    target_prefix: Option<String>,
    signing_name: String,
    protocol: String,
    api_version: String,
    operations: HashMap<String, Operation>,
    shapes: Vec<Shape>,
}

#[derive(Deserialize)]
struct RawModel {
    metadata: RawMetadata,
    operations: HashMap<String, RawOperation>,
    shapes: HashMap<String, RawShape>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadata {
    target_prefix: Option<String>,
    signing_name: Option<String>,
    endpoint_prefix: Option<String>,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    api_version: String,
}

#[derive(Deserialize)]
struct RawOperation {
    input: Option<RawRef>,
    output: Option<RawRef>,
    #[serde(default)]
    errors: Vec<RawRef>,
}

#[derive(Deserialize)]
struct RawRef {
    shape: String,
}

#[derive(Deserialize)]
struct RawShape {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    members: HashMap<String, RawRef>,
    #[serde(default)]
    required: Vec<String>,
    member: Option<RawRef>,
    key: Option<RawRef>,
    value: Option<RawRef>,
    #[serde(rename = "enum")]
    enum_values: Option<Vec<String>>,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default)]
    union: bool,
    #[serde(default)]
    document: bool,
    error: Option<RawErrorInfo>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawErrorInfo {
    code: Option<String>,
    http_status_code: Option<u16>,
    #[serde(default)]
    sender_fault: bool,
}

impl ServiceModel {
    /// Parses a botocore `service-2.json` document.
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let raw: RawModel = serde_json::from_str(json)?;
        let mut names: Vec<&String> = raw.shapes.keys().collect();
        names.sort();
        let index: HashMap<&str, ShapeId> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let resolve = |from: &str, r: &RawRef| {
            index
                .get(r.shape.as_str())
                .copied()
                .ok_or_else(|| ModelError::UnknownShape {
                    from: from.to_string(),
                    to: r.shape.clone(),
                })
        };
        let mut shapes = Vec::with_capacity(names.len());
        for name in &names {
            let s = &raw.shapes[*name];
            let bounds = Bounds {
                min: s.min,
                max: s.max,
            };
            let need = |part: &Option<RawRef>, what: &str| {
                part.as_ref()
                    .ok_or_else(|| ModelError::MalformedShape {
                        shape: (*name).clone(),
                        reason: format!("{} without {what}", s.kind),
                    })
                    .and_then(|r| resolve(name, r))
            };
            let kind = match s.kind.as_str() {
                "structure" if s.document => ShapeKind::Document,
                "structure" => ShapeKind::Structure {
                    members: s
                        .members
                        .iter()
                        .map(|(m, r)| Ok((m.clone(), resolve(name, r)?)))
                        .collect::<Result<_, ModelError>>()?,
                    required: s.required.clone(),
                    union: s.union,
                },
                "list" => ShapeKind::List {
                    member: need(&s.member, "member")?,
                    bounds,
                },
                "map" => ShapeKind::Map {
                    key: need(&s.key, "key")?,
                    value: need(&s.value, "value")?,
                    bounds,
                },
                "string" => ShapeKind::String {
                    enum_values: s.enum_values.as_ref().map(|v| v.iter().cloned().collect()),
                    bounds,
                },
                "integer" => ShapeKind::Integer { bounds },
                "long" => ShapeKind::Long { bounds },
                "boolean" => ShapeKind::Boolean,
                "double" | "float" => ShapeKind::Double { bounds },
                "timestamp" => ShapeKind::Timestamp,
                "blob" => ShapeKind::Blob { bounds },
                other => {
                    return Err(ModelError::MalformedShape {
                        shape: (*name).clone(),
                        reason: format!("unknown type {other}"),
                    })
                }
            };
            shapes.push(Shape {
                name: (*name).clone(),
                kind,
                error: s.error.clone(),
            });
        }
        let operations = raw
            .operations
            .iter()
            .map(|(name, op)| {
                Ok((
                    name.clone(),
                    Operation {
                        input: op.input.as_ref().map(|r| resolve(name, r)).transpose()?,
                        output: op.output.as_ref().map(|r| resolve(name, r)).transpose()?,
                        errors: op
                            .errors
                            .iter()
                            .map(|r| resolve(name, r))
                            .collect::<Result<_, _>>()?,
                    },
                ))
            })
            .collect::<Result<_, ModelError>>()?;
        let signing_name = raw
            .metadata
            .signing_name
            .or(raw.metadata.endpoint_prefix)
            .unwrap_or_default();
        Ok(Self {
            target_prefix: raw.metadata.target_prefix,
            signing_name,
            protocol: raw.metadata.protocol,
            api_version: raw.metadata.api_version,
            operations,
            shapes,
        })
    }

    /// The JSON protocol's `X-Amz-Target` prefix, if the service has one.
    pub fn target_prefix(&self) -> Option<&str> {
        self.target_prefix.as_deref()
    }

    /// The SigV4 signing name (the endpoint prefix when the model gives none).
    pub fn signing_name(&self) -> &str {
        &self.signing_name
    }

    /// The wire protocol's name in the model, e.g. `json` or `query`.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The API version, e.g. `2014-11-13`.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// Every operation's name, sorted.
    pub fn operation_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.operations.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether the model has the operation.
    pub fn has_operation(&self, operation: &str) -> bool {
        self.operations.contains_key(operation)
    }

    /// The errors an operation declares, with their wire codes; `None` for an unknown
    /// operation.
    pub fn error_names(&self, operation: &str) -> Option<Vec<ErrorName>> {
        let op = self.operations.get(operation)?;
        Some(
            op.errors
                .iter()
                .map(|id| {
                    let shape = &self.shapes[*id];
                    let info = shape.error.as_ref();
                    ErrorName {
                        shape: shape.name.clone(),
                        code: info
                            .and_then(|e| e.code.clone())
                            .unwrap_or_else(|| shape.name.clone()),
                        http_status: info.and_then(|e| e.http_status_code),
                        sender_fault: info.is_some_and(|e| e.sender_fault),
                    }
                })
                .collect(),
        )
    }

    /// Checks a JSON 1.1 request against the operation's input shape and maps what is
    /// wrong to the error AWS's JSON services answer with: an operation the model does
    /// not have is `UnknownOperationException`, a member of the wrong JSON type
    /// `SerializationException`, any other violation `InvalidParameterException`.
    /// Members the model does not know are ignored, as AWS's JSON services do.
    pub fn check_json_request(&self, operation: &str, value: &Value) -> Result<(), AwsError> {
        if !self.has_operation(operation) {
            return Err(AwsError::client(
                "UnknownOperationException",
                format!("Unknown operation {operation}"),
            ));
        }
        let Err(violations) = self.validate_input(operation, value) else {
            return Ok(());
        };
        let Some(first) = violations
            .iter()
            .find(|v| !matches!(v.kind, ViolationKind::UnknownMember))
        else {
            return Ok(());
        };
        let code = match first.kind {
            ViolationKind::WrongType { .. } => "SerializationException",
            _ => "InvalidParameterException",
        };
        Err(AwsError::client(code, first.to_string()))
    }

    /// Checks a request body against the operation's input shape. Unknown members are
    /// reported too; the caller decides whether they matter.
    pub fn validate_input(&self, operation: &str, value: &Value) -> Result<(), Vec<Violation>> {
        self.validate(operation, value, |op| op.input)
    }

    /// Checks a response body against the operation's output shape.
    pub fn validate_output(&self, operation: &str, value: &Value) -> Result<(), Vec<Violation>> {
        self.validate(operation, value, |op| op.output)
    }

    fn validate(
        &self,
        operation: &str,
        value: &Value,
        shape_of: impl Fn(&Operation) -> Option<ShapeId>,
    ) -> Result<(), Vec<Violation>> {
        let Some(op) = self.operations.get(operation) else {
            return Err(vec![Violation {
                path: String::new(),
                kind: ViolationKind::UnknownOperation,
            }]);
        };
        let mut out = Vec::new();
        let mut path = Vec::new();
        match shape_of(op) {
            Some(id) => self.check(id, value, &mut path, &mut out),
            // No shape: the body must be an empty object.
            None => match value {
                Value::Object(map) => {
                    for key in map.keys() {
                        path.push(Seg::Member(key));
                        push(&mut out, &path, ViolationKind::UnknownMember);
                        path.pop();
                    }
                }
                _ => push(
                    &mut out,
                    &path,
                    ViolationKind::WrongType {
                        expected: "structure",
                    },
                ),
            },
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(out)
        }
    }

    fn check<'v>(
        &'v self,
        id: ShapeId,
        value: &'v Value,
        path: &mut Vec<Seg<'v>>,
        out: &mut Vec<Violation>,
    ) {
        let wrong = |out: &mut Vec<Violation>, path: &Vec<Seg<'v>>, expected| {
            push(out, path, ViolationKind::WrongType { expected })
        };
        match &self.shapes[id].kind {
            ShapeKind::Document => {}
            ShapeKind::Structure {
                members,
                required,
                union,
            } => {
                let Value::Object(map) = value else {
                    return wrong(out, path, "structure");
                };
                let mut set = 0;
                for (key, v) in map {
                    path.push(Seg::Member(key));
                    match members.get(key) {
                        None => push(out, path, ViolationKind::UnknownMember),
                        // A null member is taken as absent, as AWS's JSON parsers do.
                        Some(_) if v.is_null() => {}
                        Some(member) => {
                            set += 1;
                            self.check(*member, v, path, out);
                        }
                    }
                    path.pop();
                }
                for name in required {
                    if map.get(name).is_none_or(Value::is_null) {
                        path.push(Seg::Member(name));
                        push(out, path, ViolationKind::MissingRequired);
                        path.pop();
                    }
                }
                if *union && set != 1 {
                    push(out, path, ViolationKind::UnionMembers { set });
                }
            }
            ShapeKind::List { member, bounds } => {
                let Value::Array(items) = value else {
                    return wrong(out, path, "list");
                };
                check_length(out, path, bounds, items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.check(*member, item, path, out);
                    path.pop();
                }
            }
            ShapeKind::Map {
                key,
                value: v,
                bounds,
            } => {
                let Value::Object(map) = value else {
                    return wrong(out, path, "map");
                };
                check_length(out, path, bounds, map.len());
                for (k, item) in map {
                    path.push(Seg::Key(k));
                    self.check_str(*key, k, path, out);
                    self.check(*v, item, path, out);
                    path.pop();
                }
            }
            ShapeKind::String { .. } => match value {
                Value::String(s) => self.check_str(id, s, path, out),
                _ => wrong(out, path, "string"),
            },
            ShapeKind::Integer { bounds } => match value.as_i64() {
                Some(n) if i32::try_from(n).is_ok() => check_range(out, path, bounds, n as f64),
                _ => wrong(out, path, "integer"),
            },
            ShapeKind::Long { bounds } => match value.as_i64() {
                Some(n) => check_range(out, path, bounds, n as f64),
                None => wrong(out, path, "long"),
            },
            ShapeKind::Boolean => {
                if !value.is_boolean() {
                    wrong(out, path, "boolean");
                }
            }
            ShapeKind::Double { bounds } => match value.as_f64() {
                Some(x) => check_range(out, path, bounds, x),
                None => wrong(out, path, "double"),
            },
            // The JSON protocol sends timestamps as epoch seconds.
            ShapeKind::Timestamp => {
                if !value.is_number() {
                    wrong(out, path, "timestamp");
                }
            }
            ShapeKind::Blob { bounds } => match value {
                Value::String(s) => match STANDARD.decode(s) {
                    Ok(bytes) => check_length(out, path, bounds, bytes.len()),
                    Err(_) => wrong(out, path, "blob"),
                },
                _ => wrong(out, path, "blob"),
            },
        }
    }

    /// Checks a string against a string shape (used for map keys too).
    fn check_str(&self, id: ShapeId, s: &str, path: &[Seg<'_>], out: &mut Vec<Violation>) {
        if let ShapeKind::String {
            enum_values,
            bounds,
        } = &self.shapes[id].kind
        {
            if let Some(allowed) = enum_values {
                if !allowed.contains(s) {
                    push(
                        out,
                        path,
                        ViolationKind::EnumValue {
                            value: s.to_string(),
                        },
                    );
                }
            }
            if bounds.min.is_some() || bounds.max.is_some() {
                check_length(out, path, bounds, s.chars().count());
            }
        }
    }
}

/// One step of a path, borrowed from the value being checked so that building the
/// path costs nothing until a violation renders it.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Member(&'a str),
    Index(usize),
    Key(&'a str),
}

fn render(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Member(m) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(m);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Seg::Key(k) => {
                out.push('[');
                out.push_str(&Value::String((*k).to_string()).to_string());
                out.push(']');
            }
        }
    }
    out
}

fn push(out: &mut Vec<Violation>, path: &[Seg<'_>], kind: ViolationKind) {
    out.push(Violation {
        path: render(path),
        kind,
    });
}

fn check_length(out: &mut Vec<Violation>, path: &[Seg<'_>], bounds: &Bounds, len: usize) {
    if !bounds.admits(len as f64) {
        push(
            out,
            path,
            ViolationKind::Length {
                min: bounds.min,
                max: bounds.max,
                actual: len,
            },
        );
    }
}

fn check_range(out: &mut Vec<Violation>, path: &[Seg<'_>], bounds: &Bounds, x: f64) {
    if !bounds.admits(x) {
        push(
            out,
            path,
            ViolationKind::Range {
                min: bounds.min,
                max: bounds.max,
                actual: x,
            },
        );
    }
}

mod query_shapes;

#[cfg(test)]
mod tests;
