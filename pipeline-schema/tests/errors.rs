//! Broken pipelines (`tests/broken/`) and the errors `executor validate`
//! prints for them, snapshotted (`tests/snapshots/`). Paths are relative to
//! the crate, as a user running `executor validate` from there sees them.
//!
//! A new broken pipeline gets its test with `broken!` below;
//! `every_broken_pipeline_has_a_test` fails until it does.

use std::path::Path;

use pipeline_schema::Pipeline;

/// What `executor validate` prints on stderr for an invalid pipeline.
fn report(path: &str) -> String {
    match Pipeline::load(path) {
        Ok(p) => panic!("{path} is valid ({} jobs)", p.jobs().len()),
        Err(errors) => format!("{errors}\n{path}: {}\n", errors.summary()),
    }
}

macro_rules! broken {
    ($($name:ident => $path:literal,)*) => {
        $(
            #[test]
            fn $name() {
                insta::assert_snapshot!(stringify!($name), report($path));
            }
        )*

        #[test]
        fn every_broken_pipeline_has_a_test() {
            let tested = [$($path),*];
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
            let mut missing = Vec::new();
            for entry in std::fs::read_dir(&dir).expect("tests/broken is listed") {
                let entry = entry.expect("tests/broken is listed");
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = if entry.path().is_dir() {
                    format!("tests/broken/{name}/pipeline.yaml")
                } else {
                    format!("tests/broken/{name}")
                };
                if !tested.contains(&path.as_str()) {
                    missing.push(path);
                }
            }
            assert!(missing.is_empty(), "add these to broken! in tests/errors.rs: {missing:?}");
        }
    };
}

broken! {
    misspelt_key => "tests/broken/misspelt_key.yaml",
    needs_unknown_job => "tests/broken/needs_unknown_job.yaml",
    needs_cycle => "tests/broken/needs_cycle.yaml",
    stage_cycle => "tests/broken/stage_cycle.yaml",
    unknown_stage => "tests/broken/unknown_stage.yaml",
    default_stage_missing => "tests/broken/default_stage_missing.yaml",
    build_and_script => "tests/broken/build_and_script.yaml",
    neither_build_nor_script => "tests/broken/neither_build_nor_script.yaml",
    bad_duration => "tests/broken/bad_duration.yaml",
    bad_rules_expression => "tests/broken/bad_rules_expression.yaml",
    bad_image_job => "tests/broken/bad_image_job.yaml",
    include_missing => "tests/broken/include_missing/pipeline.yaml",
    include_error => "tests/broken/include_error/pipeline.yaml",
    include_cycle => "tests/broken/include_cycle/pipeline.yaml",
    wrong_version => "tests/broken/wrong_version.yaml",
    missing_version_and_jobs => "tests/broken/missing_version_and_jobs.yaml",
    matrix_errors => "tests/broken/matrix_errors.yaml",
    bad_types => "tests/broken/bad_types.yaml",
    duplicate_key => "tests/broken/duplicate_key.yaml",
    anchor_error => "tests/broken/anchor_error.yaml",
    yaml_syntax => "tests/broken/yaml_syntax.yaml",
    extends_errors => "tests/broken/extends_errors.yaml",
    secrets_errors => "tests/broken/secrets_errors.yaml",
    output_clash => "tests/broken/output_clash.yaml",
    on_errors => "tests/broken/on_errors.yaml",
    job_references => "tests/broken/job_references.yaml",
    not_a_mapping => "tests/broken/not_a_mapping.yaml",
}
