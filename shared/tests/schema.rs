//! The JSON Schema that `whet schema` prints for editors.

use serde_json::Value;
use shared::config::json_schema;

#[test]
fn schema_is_a_closed_object_that_describes_plugins() {
    let schema = json_schema();
    let obj = schema.as_object().expect("an object");
    assert_eq!(obj.get("additionalProperties"), Some(&Value::Bool(false)));
    assert_eq!(obj.get("type").and_then(Value::as_str), Some("object"));
    assert!(schema["properties"]["plugins"].is_object());
    assert!(schema.to_string().contains("\"plugins\""));
    assert!(schema["$defs"]["ModelInfo"]["properties"]["input_shapes"].is_object());
    assert_eq!(
        schema["$defs"]["Plugin"]["additionalProperties"],
        Value::Bool(false)
    );
    // Deterministic, so editors and snapshot tests see the same text every time.
    assert_eq!(json_schema(), schema);
}
