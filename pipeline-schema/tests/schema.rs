//! The committed JSON Schema (`pipeline.schema.json`) is the one the types
//! generate, and it accepts the valid pipelines.

use std::path::Path;

#[test]
fn committed_schema_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.schema.json");
    let generated = pipeline_schema::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("pipeline.schema.json is written");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "pipeline-schema/pipeline.schema.json differs from the schema the types generate\n\
         hint: regenerate it with `UPDATE_SCHEMA=1 cargo test -p pipeline-schema --test schema` and commit it"
    );
}
