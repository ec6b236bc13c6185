//! Canonical JSON text, to compare workflow definitions whatever their key order.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// `value` as JSON text with object keys sorted at every level, so two
/// definitions that differ only in key order compare equal (whatever
/// serde_json's `preserve_order` feature says). Written straight from the
/// value (keys sorted by reference), not from a sorted copy of it.
pub(crate) fn canonical_json(value: &serde_json::Value) -> String {
    serde_json::to_string(&Sorted(value)).expect("JSON values always serialize")
}

/// A JSON value that serializes with its objects' keys in order.
struct Sorted<'a>(&'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Sorted(value))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Whether saving `definition` with `pins` would repeat version `newest`:
/// the same definition (canonical JSON) and the same pins (a save without
/// pins repeats any version with the same definition).
pub(crate) fn same_version(
    newest: &super::StoredWorkflow,
    definition: &serde_json::Value,
    pins: Option<&serde_json::Value>,
) -> bool {
    canonical_json(&newest.definition) == canonical_json(definition)
        && pins.is_none_or(|pins| {
            newest
                .pins
                .as_ref()
                .is_some_and(|old| canonical_json(old) == canonical_json(pins))
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::canonical_json;

    #[test]
    fn key_order_does_not_matter_and_values_do() {
        let a = json!({"b": [{"y": 1, "x": "2"}, null], "a": {"d": true, "c": 1.5}});
        let b: serde_json::Value = serde_json::from_str(
            r#"{"a": {"c": 1.5, "d": true}, "b": [{"x": "2", "y": 1}, null]}"#,
        )
        .unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":1.5,"d":true},"b":[{"x":"2","y":1},null]}"#
        );
        let c = json!({"b": [{"y": 1, "x": "3"}, null], "a": {"d": true, "c": 1.5}});
        assert_ne!(canonical_json(&a), canonical_json(&c));
    }
}
