//! Where a field that failed leaves its `null`. The GraphQL spec (§6.4.4, "Handling Execution
//! Errors") answers `null` in a failed field's place and, when the field is Non-Null, in its
//! nearest nullable ancestor's. async-graphql 7 instead leaves the failed field out of its
//! object, and answers `null` for an object all of whose fields failed. Clients see the
//! difference: Apollo Client takes a missing field for an incomplete result, where `null` with an
//! error is a complete one.
//!
//! The nulls are placed from each error's path, typed by the operation's document against the
//! served schema. This runs only for an answer with errors, never on the hot path.

use std::collections::HashSet;

use apollo_compiler::ExecutableDocument;
use apollo_compiler::ast::Type;
use apollo_compiler::executable::{Selection, SelectionSet};
use async_graphql::{Name, PathSegment, ServerError, Value};

/// The document of one executed operation, kept for placing its nulls.
#[derive(Debug)]
pub struct Operation {
    pub query: String,
    pub name: Option<String>,
    /// The request's variables, kept only when the document has `@skip` or `@include` (whose
    /// `if` may name one).
    pub variables: Option<async_graphql::Variables>,
}

/// Puts a `null` where the spec wants one for every error with a path in `errors`.
pub fn place(data: &mut Value, errors: &[ServerError], operation: &Operation) {
    if errors.iter().all(|e| e.path.is_empty()) {
        return;
    }
    let schema = super::served_schema();
    let document = match ExecutableDocument::parse(schema, operation.query.as_str(), "request") {
        Ok(document) => document,
        // The engine accepted it; what could be typed is enough.
        Err(partial) => partial.partial,
    };
    let Ok(selected) = document.operations.get(operation.name.as_deref()) else {
        return;
    };
    let conditions = Conditions {
        variables: operation.variables.as_ref(),
        operation: selected,
    };
    // Each error's null goes to the nearest nullable position at or above it; `None` is the
    // whole answer.
    let mut targets: Vec<(&[PathSegment], Steps)> = Vec::new();
    for error in errors.iter().filter(|e| !e.path.is_empty()) {
        let Some(steps) = steps_along(&error.path, &selected.selection_set, &document, &conditions)
        else {
            continue;
        };
        match nearest_nullable(&steps.types, error.path.len()) {
            Some(end) => targets.push((&error.path[..end], steps)),
            None => {
                *data = Value::Null;
                return;
            }
        }
    }
    // An answer whose every root field failed comes back as a bare null.
    if *data == Value::Null && !targets.is_empty() {
        *data = Value::Object(Default::default());
    }
    // Higher positions first: what lies under a nulled position is gone with it.
    targets.sort_by_key(|(target, _)| target.len());
    let mut nulled: Vec<&[PathSegment]> = Vec::new();
    for (target, steps) in &targets {
        let mut target: &[PathSegment] = target;
        loop {
            if nulled.iter().any(|above| target.starts_with(above)) {
                break;
            }
            // An object the engine collapsed to null is opened again only if every key selected
            // under it failed: with the same key selected in several places, the engine keeps
            // the first answer, and a collapsed one hides the others' (a null there, with the
            // error under it, is then the honest answer).
            let all_failed = |depth: usize| {
                steps.keys_under[depth].iter().all(|key| {
                    errors.iter().any(|e| {
                        e.path.len() > depth + 1
                            && e.path[..=depth] == target[..=depth]
                            && matches!(&e.path[depth + 1], PathSegment::Field(k) if k == key)
                    })
                })
            };
            match set_null(data, target, all_failed) {
                Ok(()) => {
                    nulled.push(target);
                    break;
                }
                // Left null at `depth`: if that position may not be null, the null climbs on.
                Err(depth) => match nearest_nullable(&steps.types, depth + 1) {
                    Some(end) if end == depth + 1 => break,
                    Some(end) => target = &target[..end],
                    None => {
                        *data = Value::Null;
                        return;
                    }
                },
            }
        }
    }
}

/// The length of the path to the nearest nullable position among the first `len` steps.
fn nearest_nullable(types: &[Type], len: usize) -> Option<usize> {
    types[..len]
        .iter()
        .rposition(|ty| !ty.is_non_null())
        .map(|i| i + 1)
}

/// What the document says about each step of an error's path.
struct Steps {
    /// The declared type at each step.
    types: Vec<Type>,
    /// The response keys selected under the position of each step.
    keys_under: Vec<Vec<String>>,
}

/// The steps of `path`, or `None` when the path does not follow the document (then nothing is
/// placed for it).
fn steps_along(
    path: &[PathSegment],
    root: &SelectionSet,
    document: &ExecutableDocument,
    conditions: &Conditions<'_>,
) -> Option<Steps> {
    let mut steps = Steps {
        types: Vec::with_capacity(path.len()),
        keys_under: Vec::with_capacity(path.len()),
    };
    // A response key can be selected in several places (fragments, repeated fields), and the
    // engine merges them: the next key may be in any of their selections.
    let mut selections: Vec<&SelectionSet> = vec![root];
    for segment in path {
        let ty = match segment {
            PathSegment::Field(key) => {
                let mut fields = Vec::new();
                let mut spread = HashSet::new();
                for set in &selections {
                    fields_by_response_key(
                        set,
                        key,
                        document,
                        conditions,
                        &mut spread,
                        &mut fields,
                    );
                }
                // Fields merged under one key have one type (validation).
                let ty = fields.first()?.definition.ty.clone();
                selections = fields.iter().map(|field| &field.selection_set).collect();
                let mut keys = Vec::new();
                let mut spread = HashSet::new();
                for set in &selections {
                    response_keys(set, document, conditions, &mut spread, &mut keys);
                }
                steps.keys_under.push(keys);
                ty
            }
            PathSegment::Index(_) => {
                let list = steps.types.last().filter(|ty| ty.is_list())?;
                let keys = steps.keys_under.last().cloned().unwrap_or_default();
                steps.keys_under.push(keys);
                list.item_type().clone()
            }
        };
        steps.types.push(ty);
    }
    Some(steps)
}

/// What decides `@skip` and `@include`: the request's variables, then the operation's defaults.
struct Conditions<'d> {
    variables: Option<&'d async_graphql::Variables>,
    operation: &'d apollo_compiler::executable::Operation,
}

impl Conditions<'_> {
    /// Whether a selection is left out by `@skip(if: true)` or `@include(if: false)`, the
    /// condition written or in a variable. A condition that cannot be read (no such variable)
    /// counts as skipped: the key is then not required to have failed.
    fn skip(&self, directives: &apollo_compiler::executable::DirectiveList) -> bool {
        let condition = |name: &str| {
            let value = directives.get(name)?.specified_argument_by_name("if")?;
            Some(match value.as_variable() {
                None => value.to_bool(),
                Some(variable) => self.variable(variable.as_str()),
            })
        };
        matches!(
            (condition("skip"), condition("include")),
            (Some(Some(true) | None), _) | (_, Some(Some(false) | None))
        )
    }

    fn variable(&self, name: &str) -> Option<bool> {
        let given = self
            .variables
            .and_then(|variables| variables.get(&Name::new(name)));
        match given {
            Some(Value::Boolean(b)) => Some(*b),
            Some(_) => None,
            None => self
                .operation
                .variables
                .iter()
                .find(|definition| definition.name.as_str() == name)?
                .default_value
                .as_ref()?
                .to_bool(),
        }
    }
}

/// Every response key selected in `set`, through fragments, once each.
fn response_keys<'d>(
    set: &'d SelectionSet,
    document: &'d ExecutableDocument,
    conditions: &Conditions<'_>,
    spread: &mut HashSet<&'d str>,
    keys: &mut Vec<String>,
) {
    for selection in &set.selections {
        match selection {
            Selection::Field(field) => {
                let key = field.response_key().as_str();
                if !conditions.skip(&field.directives) && !keys.iter().any(|k| k == key) {
                    keys.push(key.to_owned());
                }
            }
            Selection::InlineFragment(inline) => {
                if !conditions.skip(&inline.directives) {
                    response_keys(&inline.selection_set, document, conditions, spread, keys);
                }
            }
            Selection::FragmentSpread(fragment) => {
                if let Some(definition) = fragment.fragment_def(document)
                    && !conditions.skip(&fragment.directives)
                    && spread.insert(definition.name.as_str())
                {
                    response_keys(
                        &definition.selection_set,
                        document,
                        conditions,
                        spread,
                        keys,
                    );
                }
            }
        }
    }
}

/// Every field answered under `key` in `set`, looking through fragments; each named fragment
/// is looked into once per step (`spread`), so a document that spreads one fragment many times
/// is walked once.
fn fields_by_response_key<'d>(
    set: &'d SelectionSet,
    key: &str,
    document: &'d ExecutableDocument,
    conditions: &Conditions<'_>,
    spread: &mut HashSet<&'d str>,
    found: &mut Vec<&'d apollo_compiler::executable::Field>,
) {
    for selection in &set.selections {
        match selection {
            Selection::Field(field) => {
                if field.response_key().as_str() == key && !conditions.skip(&field.directives) {
                    found.push(field);
                }
            }
            Selection::InlineFragment(inline) => {
                if !conditions.skip(&inline.directives) {
                    fields_by_response_key(
                        &inline.selection_set,
                        key,
                        document,
                        conditions,
                        spread,
                        found,
                    );
                }
            }
            Selection::FragmentSpread(fragment) => {
                if let Some(definition) = fragment.fragment_def(document)
                    && !conditions.skip(&fragment.directives)
                    && spread.insert(definition.name.as_str())
                {
                    fields_by_response_key(
                        &definition.selection_set,
                        key,
                        document,
                        conditions,
                        spread,
                        found,
                    );
                }
            }
        }
    }
}

/// Sets the value at `path` to null, re-opening on the way the objects the engine collapsed to
/// null when `may_reopen(depth)` says every key under them failed. `Err(depth)` when the value
/// at `path[..=depth]` is a null left as it is. A path the answer does not follow is left alone.
fn set_null(
    data: &mut Value,
    path: &[PathSegment],
    may_reopen: impl Fn(usize) -> bool,
) -> Result<(), usize> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = data;
    for (i, segment) in parents.iter().enumerate() {
        let child = match (segment, current) {
            (PathSegment::Field(key), Value::Object(map)) => {
                map.entry(Name::new(key)).or_insert(Value::Null)
            }
            (PathSegment::Index(index), Value::List(items)) => match items.get_mut(*index) {
                Some(item) => item,
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        if *child == Value::Null {
            if !matches!(path[i + 1], PathSegment::Field(_)) || !may_reopen(i) {
                return Err(i);
            }
            *child = Value::Object(Default::default());
        }
        current = child;
    }
    match (last, current) {
        (PathSegment::Field(key), Value::Object(map)) => {
            map.insert(Name::new(key), Value::Null);
        }
        (PathSegment::Index(index), Value::List(items)) => {
            if let Some(item) = items.get_mut(*index) {
                *item = Value::Null;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(query: &str, data: serde_json::Value, paths: &[serde_json::Value]) -> Value {
        let mut data = Value::from_json(data).expect("data");
        let errors: Vec<ServerError> = paths
            .iter()
            .map(|path| {
                let mut error = ServerError::new("failed", None);
                error.path = serde_json::from_value(path.clone()).expect("path");
                error
            })
            .collect();
        let operation = Operation {
            query: query.to_owned(),
            name: None,
            variables: Some(async_graphql::Variables::from_json(
                serde_json::json!({ "yes": true, "no": false }),
            )),
        };
        place(&mut data, &errors, &operation);
        data
    }

    fn json(value: Value) -> serde_json::Value {
        value.into_json().expect("json")
    }

    #[test]
    fn a_non_null_field_nulls_its_nullable_parent_not_the_whole_answer() {
        let query = r#"{ me { id } patient(id: "p") { mrn careTeam { careRole } } }"#;
        let data = serde_json::json!({ "me": { "id": "1" }, "patient": { "mrn": "A-1" } });
        let out = placed(query, data, &[serde_json::json!(["patient", "careTeam"])]);
        assert_eq!(
            json(out),
            serde_json::json!({ "me": { "id": "1" }, "patient": null })
        );
    }

    #[test]
    fn a_nullable_field_in_a_list_item_is_null_in_that_item_only() {
        let query = "{ patients { edges { node { mrn notes: clinicalNotes } } } }";
        let data = serde_json::json!({ "patients": { "edges": [
            { "node": { "mrn": "A", "notes": "x" } },
            { "node": { "mrn": "B" } }
        ] } });
        let out = placed(
            query,
            data,
            &[serde_json::json!(["patients", "edges", 1, "node", "notes"])],
        );
        assert_eq!(
            json(out),
            serde_json::json!({ "patients": { "edges": [
                { "node": { "mrn": "A", "notes": "x" } },
                { "node": { "mrn": "B", "notes": null } }
            ] } })
        );
    }

    #[test]
    fn a_non_null_chain_up_to_the_root_nulls_the_whole_answer() {
        let query = "{ patients { edges { node { careTeam { careRole } } } } }";
        let data = serde_json::json!({ "patients": { "edges": [ { "node": {} } ] } });
        let out = placed(
            query,
            data,
            &[serde_json::json!([
                "patients", "edges", 0, "node", "careTeam"
            ])],
        );
        assert_eq!(out, Value::Null);
    }

    #[test]
    fn fields_named_through_fragments_and_aliases_are_found() {
        let query = r#"query { p: patient(id: "p") { ...F } } fragment F on Patient { ... on Patient { n: clinicalNotes } }"#;
        // Every field of `p` failed, so the engine answered `p: null`.
        let data = serde_json::json!({ "p": null });
        let out = placed(query, data, &[serde_json::json!(["p", "n"])]);
        assert_eq!(json(out), serde_json::json!({ "p": { "n": null } }));
    }

    #[test]
    fn a_key_selected_in_several_places_is_followed_into_each() {
        // Apollo's colocated fragments: `me` selected twice, the failing field in the second.
        let query = r#"query { ...A ...B } fragment A on Query { me { id } } fragment B on Query { me { patients(after: "x") { edges { node { mrn } } } } }"#;
        let data = serde_json::json!({ "me": { "id": "1" } });
        let out = placed(query, data, &[serde_json::json!(["me", "patients"])]);
        assert_eq!(json(out), serde_json::json!({ "me": null }));

        let query = r#"{ p: patient(id: "x") @skip(if: true) { mrn } p: patient(id: "x") { clinicalNotes } }"#;
        let out = placed(
            query,
            serde_json::json!({ "p": null }),
            &[serde_json::json!(["p", "clinicalNotes"])],
        );
        assert_eq!(
            json(out),
            serde_json::json!({ "p": { "clinicalNotes": null } })
        );
    }

    #[test]
    fn a_collapsed_object_that_hid_a_sibling_selection_stays_null() {
        // The engine resolves each selection of `p` apart and keeps the first answer: the
        // all-failed one (null) hid the other's `mrn` and `careTeam`. Reopening it would make the
        // answer look complete without them.
        let query = r#"{ p: patient(id: "x") { clinicalNotes } p: patient(id: "x") { mrn careTeam { careRole } } }"#;
        let out = placed(
            query,
            serde_json::json!({ "p": null }),
            &[serde_json::json!(["p", "clinicalNotes"])],
        );
        assert_eq!(json(out), serde_json::json!({ "p": null }));
    }

    #[test]
    fn a_collapsed_non_null_object_that_stays_null_takes_its_parent() {
        let query = "{ patients { edges { node { mrn } node { clinicalNotes } } } }";
        let data = serde_json::json!({ "patients": { "edges": [ { "node": null } ] } });
        let out = placed(
            query,
            data,
            &[serde_json::json!([
                "patients",
                "edges",
                0,
                "node",
                "clinicalNotes"
            ])],
        );
        // node: Patient!, edges: [PatientEdge!]!, patients: PatientConnection! — the whole answer.
        assert_eq!(out, Value::Null);
    }

    #[test]
    fn skip_and_include_read_their_variables_and_defaults() {
        // The review of the fix: a key under `@skip(if: $s)` counted as selected and never
        // failed, so a collapsed page node stayed null and took the whole answer with it.
        for query in [
            "query($yes: Boolean!) { patients { edges { node { clinicalNotes mrn @skip(if: $yes) } } } }",
            "query($no: Boolean!) { patients { edges { node { clinicalNotes mrn @include(if: $no) } } } }",
            "query($d: Boolean = false) { patients { edges { node { ...F } } } } fragment F on Patient { clinicalNotes mrn @include(if: $d) }",
        ] {
            let data = serde_json::json!({ "patients": { "edges": [ { "node": null } ] } });
            let out = placed(
                query,
                data,
                &[serde_json::json!([
                    "patients",
                    "edges",
                    0,
                    "node",
                    "clinicalNotes"
                ])],
            );
            assert_eq!(
                json(out),
                serde_json::json!({ "patients": { "edges": [ { "node": { "clinicalNotes": null } } ] } }),
                "{query}"
            );
        }
    }

    #[test]
    fn an_error_under_a_nulled_position_does_not_reopen_it() {
        let query = r#"{ patient(id: "p") { careTeam { careRole } clinicalNotes } }"#;
        let data = serde_json::json!({ "patient": {} });
        let out = placed(
            query,
            data,
            &[
                serde_json::json!(["patient", "clinicalNotes"]),
                serde_json::json!(["patient", "careTeam"]),
            ],
        );
        assert_eq!(json(out), serde_json::json!({ "patient": null }));
    }
}
