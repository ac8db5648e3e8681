//! What a record of a Datanet means, where more than one service reads records: the text of a
//! JSON-lines record is its string values, depth first, joined by spaces (validation judges
//! that text for quality and duplicates; training trains on it).

/// Appends the text of a JSON value to `out`.
pub fn json_text(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::String(text) => {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(text);
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| json_text(item, out)),
        serde_json::Value::Object(fields) => fields.values().for_each(|item| json_text(item, out)),
        _ => {}
    }
}
