//! Canonical JSON text, to compare workflow definitions whatever their key order.

/// `value` as JSON text with object keys sorted at every level, so two
/// definitions that differ only in key order compare equal (whatever
/// serde_json's `preserve_order` feature says).
pub(crate) fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string()
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
