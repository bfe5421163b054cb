//! What every JSON 1.1 response shares.

use serde_json::Value;

/// Drops `null` members, recursively: AWS leaves absent members out of a response
/// rather than sending them as null, and strict SDKs tell the two apart.
pub fn omit_nulls(value: &mut Value) {
    match value {
        Value::Object(members) => {
            members.retain(|_, v| !v.is_null());
            members.values_mut().for_each(omit_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(omit_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_go_at_every_depth_and_other_values_stay() {
        let mut value =
            serde_json::json!({"a": null, "b": [{"c": null, "d": 0}], "e": {"f": null}});
        omit_nulls(&mut value);
        assert_eq!(value, serde_json::json!({"b": [{"d": 0}], "e": {}}));
    }
}
