//! The query protocol seen through a service model: reading a form
//! (`Name.member.N.Field=…`) into a JSON value of the operation's input shape, so that
//! query services are checked and parsed exactly as JSON ones are, and writing a JSON
//! value of the operation's output shape as the XML of `<OperationResult>`.
//!
//! The shapes decide how each name is read: a list's items are `member.N`, a map's
//! entries `entry.N.key` and `entry.N.value`, a structure's members `Member`. Scalars
//! are parsed by their shape's type; a value that does not parse is a `WrongType`
//! violation. Parameters the shape does not know are ignored, as AWS's query services
//! do. (The models Wharf serves this way, ELBv2's, use neither `locationName` nor
//! flattened lists, so neither is handled.)

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::{ServiceModel, ShapeId, ShapeKind, Violation, ViolationKind};
use crate::query::escape_xml;
use crate::AwsError;

/// The form as a tree of dotted name segments.
#[derive(Debug, Default)]
struct Node<'a> {
    value: Option<&'a str>,
    children: BTreeMap<&'a str, Node<'a>>,
}

impl<'a> Node<'a> {
    fn build(pairs: &'a [(String, String)]) -> Self {
        let mut root = Node::default();
        for (key, value) in pairs {
            let mut node = &mut root;
            for seg in key.split('.') {
                node = node.children.entry(seg).or_default();
            }
            // The first value wins, as with a repeated scalar parameter.
            node.value.get_or_insert(value.as_str());
        }
        root
    }

    /// The children under `member.N` / `entry.N`, in index order; `Err` names an index
    /// that is not a positive integer.
    fn indexed(&self, word: &str) -> Result<Vec<&Node<'a>>, &'a str> {
        let Some(items) = self.children.get(word) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(items.children.len());
        for (index, node) in &items.children {
            match index.parse::<u32>() {
                Ok(n) if n >= 1 && !index.starts_with('+') => out.push((n, node)),
                _ => return Err(index),
            }
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out.into_iter().map(|(_, node)| node).collect())
    }
}

impl ServiceModel {
    /// Reads a query-protocol form (without `Action` and `Version`) into a JSON value of
    /// the operation's input shape. The value still has to be checked against the
    /// shape ([`ServiceModel::validate_input`]); this step only reports values that do
    /// not parse as their type.
    pub fn query_input(
        &self,
        operation: &str,
        pairs: &[(String, String)],
    ) -> Result<Value, Vec<Violation>> {
        let Some(op) = self.operations.get(operation) else {
            return Err(vec![Violation {
                path: String::new(),
                kind: ViolationKind::UnknownOperation,
            }]);
        };
        let root = Node::build(pairs);
        let mut out = Vec::new();
        let value = match op.input {
            Some(id) => self
                .read_node(id, &root, "", &mut out)
                .unwrap_or_else(|| Value::Object(Map::new())),
            None => Value::Object(Map::new()),
        };
        if out.is_empty() {
            Ok(value)
        } else {
            Err(out)
        }
    }

    /// Reads, checks and answers with the input of a query-protocol call: an operation
    /// the model lacks is `InvalidAction`, any violation of the input shape
    /// `ValidationError` (the query services' common errors).
    pub fn check_query_request(
        &self,
        operation: &str,
        pairs: &[(String, String)],
    ) -> Result<Value, AwsError> {
        if !self.has_operation(operation) {
            return Err(AwsError::client(
                "InvalidAction",
                format!(
                    "Could not find operation {operation} for version {}",
                    self.api_version
                ),
            ));
        }
        let first_error = |violations: Vec<Violation>| {
            let first = violations
                .iter()
                .find(|v| !matches!(v.kind, ViolationKind::UnknownMember))
                .or(violations.first())
                .map(|v| v.to_string())
                .unwrap_or_default();
            AwsError::client("ValidationError", first)
        };
        let value = self.query_input(operation, pairs).map_err(first_error)?;
        match self.validate_input(operation, &value) {
            Ok(()) => Ok(value),
            Err(violations) => {
                if violations
                    .iter()
                    .all(|v| matches!(v.kind, ViolationKind::UnknownMember))
                {
                    Ok(value)
                } else {
                    Err(first_error(violations))
                }
            }
        }
    }

    fn read_node(
        &self,
        id: ShapeId,
        node: &Node<'_>,
        path: &str,
        out: &mut Vec<Violation>,
    ) -> Option<Value> {
        let wrong = |out: &mut Vec<Violation>, expected| {
            out.push(Violation {
                path: path.to_owned(),
                kind: ViolationKind::WrongType { expected },
            });
            None
        };
        let join = |member: &str| {
            if path.is_empty() {
                member.to_owned()
            } else {
                format!("{path}.{member}")
            }
        };
        match &self.shapes[id].kind {
            ShapeKind::Structure { members, .. } => {
                let mut map = Map::new();
                for (name, member) in members {
                    if let Some(child) = node.children.get(name.as_str()) {
                        if let Some(v) = self.read_node(*member, child, &join(name), out) {
                            map.insert(name.clone(), v);
                        }
                    }
                }
                Some(Value::Object(map))
            }
            ShapeKind::Document => node.value.map(|v| Value::String(v.to_owned())),
            ShapeKind::List { member, .. } => {
                let items = match node.indexed("member") {
                    Ok(items) => items,
                    Err(_) => return wrong(out, "list"),
                };
                // An empty list is sent as the bare name with an empty value.
                if items.is_empty() && node.value.is_none() {
                    return None;
                }
                let values = items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        self.read_node(*member, item, &format!("{path}[{i}]"), out)
                    })
                    .collect();
                Some(Value::Array(values))
            }
            ShapeKind::Map { key, value, .. } => {
                let entries = match node.indexed("entry") {
                    Ok(entries) => entries,
                    Err(_) => return wrong(out, "map"),
                };
                if entries.is_empty() && node.value.is_none() {
                    return None;
                }
                let mut map = Map::new();
                for entry in entries {
                    let k = entry
                        .children
                        .get("key")
                        .and_then(|k| self.read_node(*key, k, path, out));
                    let v = entry
                        .children
                        .get("value")
                        .and_then(|v| self.read_node(*value, v, path, out));
                    match (k, v) {
                        (Some(Value::String(k)), Some(v)) => {
                            map.insert(k, v);
                        }
                        _ => return wrong(out, "map"),
                    }
                }
                Some(Value::Object(map))
            }
            ShapeKind::String { .. } | ShapeKind::Blob { .. } => {
                node.value.map(|v| Value::String(v.to_owned()))
            }
            ShapeKind::Integer { .. } | ShapeKind::Long { .. } => {
                let v = node.value?;
                match v.trim().parse::<i64>() {
                    Ok(n) => Some(Value::Number(n.into())),
                    Err(_) => wrong(out, "integer"),
                }
            }
            ShapeKind::Double { .. } => {
                let v = node.value?;
                match v.trim().parse::<f64>().ok().and_then(Number::from_f64) {
                    Some(n) => Some(Value::Number(n)),
                    None => wrong(out, "double"),
                }
            }
            ShapeKind::Boolean => match node.value?.to_ascii_lowercase().as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => wrong(out, "boolean"),
            },
            ShapeKind::Timestamp => {
                let v = node.value?;
                let seconds = chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.timestamp_millis() as f64 / 1000.0)
                    .ok()
                    .or_else(|| v.parse::<f64>().ok());
                match seconds.and_then(Number::from_f64) {
                    Some(n) => Some(Value::Number(n)),
                    None => wrong(out, "timestamp"),
                }
            }
        }
    }

    /// Writes a JSON value of the operation's output shape as the inner XML of its
    /// `<OperationResult>` element: structure members as elements, list items as
    /// `<member>`, map entries as `<entry><key/><value/></entry>`, timestamps (epoch
    /// seconds in the value) as ISO 8601. Nulls are left out. A member the shape does
    /// not know is written as it comes, so that a test reading the XML back against
    /// the model sees it.
    pub fn query_output_xml(&self, operation: &str, value: &Value) -> String {
        let mut xml = String::new();
        let shape = self.operations.get(operation).and_then(|op| op.output);
        if let Value::Object(map) = value {
            self.write_members(shape, map, &mut xml);
        }
        xml
    }

    fn write_members(&self, shape: Option<ShapeId>, map: &Map<String, Value>, xml: &mut String) {
        let members = shape.and_then(|id| match &self.shapes[id].kind {
            ShapeKind::Structure { members, .. } => Some(members),
            _ => None,
        });
        for (name, v) in map {
            if v.is_null() {
                continue;
            }
            let member = members.and_then(|m| m.get(name)).copied();
            write_open(xml, name);
            self.write_value(member, v, xml);
            write_close(xml, name);
        }
    }

    fn write_value(&self, shape: Option<ShapeId>, value: &Value, xml: &mut String) {
        let kind = shape.map(|id| &self.shapes[id].kind);
        match (kind, value) {
            (Some(ShapeKind::Map { value: v, .. }), Value::Object(map)) => {
                for (k, item) in map {
                    xml.push_str("<entry><key>");
                    xml.push_str(&escape_xml(k));
                    xml.push_str("</key><value>");
                    self.write_value(Some(*v), item, xml);
                    xml.push_str("</value></entry>");
                }
            }
            (_, Value::Object(map)) => self.write_members(shape, map, xml),
            (_, Value::Array(items)) => {
                let member = match kind {
                    Some(ShapeKind::List { member, .. }) => Some(*member),
                    _ => None,
                };
                for item in items {
                    xml.push_str("<member>");
                    self.write_value(member, item, xml);
                    xml.push_str("</member>");
                }
            }
            (Some(ShapeKind::Timestamp), Value::Number(n)) => {
                let millis = (n.as_f64().unwrap_or_default() * 1000.0).round() as i64;
                let text = chrono::DateTime::from_timestamp_millis(millis)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_default();
                xml.push_str(&text);
            }
            (_, Value::String(s)) => xml.push_str(&escape_xml(s)),
            (_, Value::Number(n)) => xml.push_str(&n.to_string()),
            (_, Value::Bool(b)) => xml.push_str(if *b { "true" } else { "false" }),
            (_, Value::Null) => {}
        }
    }
}

fn write_open(xml: &mut String, name: &str) {
    xml.push('<');
    xml.push_str(&escape_xml(name));
    xml.push('>');
}

fn write_close(xml: &mut String, name: &str) {
    xml.push_str("</");
    xml.push_str(&escape_xml(name));
    xml.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn elbv2() -> &'static ServiceModel {
        static MODEL: std::sync::OnceLock<ServiceModel> = std::sync::OnceLock::new();
        MODEL.get_or_init(|| {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../models/elbv2-2015-12-01.json"
            );
            ServiceModel::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
        })
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forms_become_values_of_the_input_shape() {
        let form = pairs(&[
            ("TargetGroupArn", "arn"),
            ("Targets.member.2.Id", "10.0.0.2"),
            ("Targets.member.1.Id", "10.0.0.1"),
            ("Targets.member.1.Port", "8080"),
            ("Unknown", "ignored"),
        ]);
        let v = elbv2()
            .check_query_request("RegisterTargets", &form)
            .unwrap();
        assert_eq!(
            v,
            json!({"TargetGroupArn": "arn", "Targets": [{"Id": "10.0.0.1", "Port": 8080}, {"Id": "10.0.0.2"}]})
        );
        let form = pairs(&[
            ("Name", "tg"),
            ("Port", "80"),
            ("HealthCheckEnabled", "true"),
            ("Matcher.HttpCode", "200-299"),
        ]);
        let v = elbv2()
            .check_query_request("CreateTargetGroup", &form)
            .unwrap();
        assert_eq!(v["HealthCheckEnabled"], json!(true));
        assert_eq!(v["Matcher"], json!({"HttpCode": "200-299"}));
        // An empty list is the bare name.
        let form = pairs(&[("ResourceArns.member.1", "a"), ("TagKeys", "")]);
        let v = elbv2().check_query_request("RemoveTags", &form).unwrap();
        assert_eq!(v["TagKeys"], json!([]));
    }

    #[test]
    fn bad_forms_are_validation_errors() {
        let m = elbv2();
        let err = m.check_query_request("CreateTargetGroup", &[]).unwrap_err();
        assert_eq!(err.code, "ValidationError");
        assert!(err.message.contains("Name"), "{}", err.message);
        let err = m
            .check_query_request("CreateTargetGroup", &pairs(&[("Name", "a"), ("Port", "x")]))
            .unwrap_err();
        assert_eq!(err.code, "ValidationError");
        let err = m
            .check_query_request(
                "CreateTargetGroup",
                &pairs(&[("Name", "a"), ("Protocol", "GOPHER")]),
            )
            .unwrap_err();
        assert_eq!(err.code, "ValidationError");
        let err = m
            .check_query_request("DescribeLoadBalancers", &pairs(&[("Names.member.0", "a")]))
            .unwrap_err();
        assert_eq!(err.code, "ValidationError");
        let err = m.check_query_request("Nope", &[]).unwrap_err();
        assert_eq!(err.code, "InvalidAction");
    }

    #[test]
    fn outputs_are_written_as_query_xml() {
        let xml = elbv2().query_output_xml(
            "DescribeLoadBalancers",
            &json!({"LoadBalancers": [{
                "LoadBalancerName": "a<b",
                "CreatedTime": 0.5,
                "AvailabilityZones": [],
                "Missing": null,
            }], "NextMarker": null}),
        );
        assert_eq!(
            xml,
            "<LoadBalancers><member><AvailabilityZones></AvailabilityZones><CreatedTime>1970-01-01T00:00:00.500Z</CreatedTime><LoadBalancerName>a&lt;b</LoadBalancerName></member></LoadBalancers>"
        );
    }

    proptest! {
        #[test]
        fn any_form_reads_without_panic(
            form in prop::collection::vec(("[A-Za-z0-9.]{0,30}", "\\PC{0,10}"), 0..20),
            op in prop::sample::select(vec!["CreateRule", "CreateTargetGroup", "RegisterTargets", "AddTags", "ModifyTargetGroupAttributes"]),
        ) {
            let _ = elbv2().check_query_request(op, &form);
        }
    }
}
