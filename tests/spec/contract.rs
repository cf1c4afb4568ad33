//! `schema.graphql` is the contract: the server's schema must equal it, and every client
//! operation in `tests/operations/` must validate against it.

use std::path::{Path, PathBuf};

use apollo_compiler::{ExecutableDocument, Schema};

fn workspace_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

/// Lines only in `committed` (-) and only in `generated` (+), in order: enough to review.
fn schema_diff(committed: &str, generated: &str) -> Vec<String> {
    let old: Vec<&str> = committed.lines().collect();
    let new: Vec<&str> = generated.lines().collect();
    let mut diff: Vec<String> = old
        .iter()
        .filter(|l| !new.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    diff.extend(
        new.iter()
            .filter(|l| !old.contains(l))
            .map(|l| format!("+ {l}")),
    );
    if diff.is_empty() && committed != generated {
        diff.push("~ same lines, different order or whitespace".to_owned());
    }
    diff
}

#[test]
fn generated_schema_equals_the_committed_schema_graphql() {
    let path = workspace_file("schema.graphql");
    let generated = rowguard::graphql::sdl();
    if std::env::var("UPDATE_SCHEMA").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).expect("rewriting schema.graphql");
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("schema.graphql is committed");
    let diff = schema_diff(&committed, &generated);
    assert!(
        diff.is_empty(),
        "the server's schema differs from schema.graphql (review the change, then run \
         `UPDATE_SCHEMA=1 cargo test --workspace contract`):\n{}",
        diff.join("\n")
    );
}

#[test]
fn a_renamed_field_shows_up_as_a_contract_diff() {
    let committed = rowguard::graphql::sdl();
    let changed = committed.replacen("mrn: String!", "medicalRecordNumber: String!", 1);
    let diff = schema_diff(&committed, &changed);
    assert!(
        diff.iter().any(|l| l.contains("- \tmrn: String!")),
        "{diff:?}"
    );
    assert!(
        diff.iter()
            .any(|l| l.contains("+ \tmedicalRecordNumber: String!")),
        "{diff:?}"
    );
}

#[test]
fn committed_schema_is_valid_graphql() {
    let sdl = std::fs::read_to_string(workspace_file("schema.graphql")).expect("schema.graphql");
    Schema::parse_and_validate(sdl, "schema.graphql").expect("schema.graphql is a valid schema");
}

#[test]
fn every_client_operation_validates_against_schema_graphql() {
    let sdl = std::fs::read_to_string(workspace_file("schema.graphql")).expect("schema.graphql");
    let schema = Schema::parse_and_validate(sdl, "schema.graphql").expect("valid schema");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("operations");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/operations") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("graphql") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("operation file");
        if let Err(errors) = ExecutableDocument::parse_and_validate(&schema, source, &path) {
            panic!(
                "{} does not validate against schema.graphql:\n{errors}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "expected the client operations, found {checked}"
    );
}
