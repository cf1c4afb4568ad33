//! Variable values the engine's validation would quote back at every use. An enum variable's
//! unknown value and an input object's unknown field are named in the error for each argument
//! that uses the variable, so one megabyte-long value sent to twenty aliases made twenty
//! megabytes of messages. No enum value or input field of the schema is longer than a document
//! name may be, so longer ones are refused first, once.

use apollo_compiler::schema::ExtendedType;
use async_graphql::Variables;
use async_graphql::parser::types::{BaseType, OperationDefinition, Type};
use async_graphql_value::ConstValue;

use super::documents::LONGEST_NAME;

/// The first variable of `operation` whose value holds an enum value or an input field name
/// longer than any the schema has.
pub fn overlong_value<'o>(
    operation: &'o OperationDefinition,
    variables: &Variables,
) -> Option<&'o str> {
    operation
        .variable_definitions
        .iter()
        .find(|definition| {
            let definition = &definition.node;
            variables
                .get(&definition.name.node)
                .is_some_and(|value| holds_overlong(base_name(&definition.var_type.node), value))
        })
        .map(|definition| definition.node.name.node.as_str())
}

/// Keeps the variables `operation` declares and gives those left out their declared defaults, as
/// the spec's CoerceVariableValues does before anything runs; with no operation to run, keeps
/// none. The engine applied a default where an argument uses the variable but not in
/// `@include`/`@skip` (`$x: Boolean! = true` left out dropped the fields it guarded), and it
/// read and checked variables no operation declares wherever the document wrote them: a request
/// with 60,000 undeclared variables held them all through validation.
pub fn coerce(operation: Option<&OperationDefinition>, variables: &mut Variables) {
    let Some(operation) = operation else {
        variables.clear();
        return;
    };
    let declared: std::collections::HashSet<&str> = operation
        .variable_definitions
        .iter()
        .map(|definition| definition.node.name.node.as_str())
        .collect();
    variables.retain(|name, _| declared.contains(name.as_str()));
    for definition in &operation.variable_definitions {
        let definition = &definition.node;
        if let Some(default) = &definition.default_value
            && !variables.contains_key(&definition.name.node)
        {
            variables.insert(definition.name.node.clone(), default.node.clone());
        }
    }
}

/// A variable `operation` declares as required (non-null) that the request sends as null, or
/// leaves out with no default value, with its declared type. The spec makes that a request error
/// before anything runs; the engine only notices where an argument uses the variable, so one used
/// only in `@include(if: $x)` or `@skip` was read as absent and the field silently left out.
pub fn missing_required<'o>(
    operation: &'o OperationDefinition,
    variables: &Variables,
) -> Option<(&'o str, &'o Type)> {
    operation
        .variable_definitions
        .iter()
        .map(|definition| &definition.node)
        .find(|definition| {
            // Spec, CoerceVariableValues: an explicit null is refused even with a default.
            !definition.var_type.node.nullable
                && match variables.get(&definition.name.node) {
                    None => definition.default_value.is_none(),
                    Some(value) => matches!(value, ConstValue::Null),
                }
        })
        .map(|definition| (definition.name.node.as_str(), &definition.var_type.node))
}

/// The most bytes of variable values the document may refer to beyond a declaration and one
/// use of each, a value counted once per extra time its variable is written. The engine checks a
/// variable's value at every argument that uses it, wherever that is (an operation that will
/// not run, a fragment, whatever the variable was declared as, or if it was not declared), and
/// quotes the value in the error when it is not what the argument takes: 450 uses of a 1 MB
/// value took 1.2 GB, and seven variables of 150 KB written eight times each built 7 MB of
/// errors. One budget for all the variables together.
const QUOTABLE_BYTES: usize = 1 << 20;

/// The variables written more than twice (a declaration and one use), if together their values,
/// each counted once per extra write, exceed [`QUOTABLE_BYTES`]. A large value written once,
/// such as a clinical note, is always fine.
pub fn written_too_often(query: &str, variables: &Variables) -> Option<String> {
    let mut total = 0usize;
    let mut named = Vec::new();
    let mut uses = None;
    for (name, value) in variables.iter() {
        let bytes = serde_json::to_vec(value).map_or(usize::MAX, |json| json.len());
        if bytes.saturating_mul(query.len()) <= QUOTABLE_BYTES / 8 {
            // Too small to matter however often it could be written.
            continue;
        }
        let uses = uses.get_or_insert_with(|| super::documents::variable_uses(query));
        let extra = uses
            .get(name.as_str())
            .copied()
            .unwrap_or(0)
            .saturating_sub(2);
        if extra > 0 {
            total = total.saturating_add(bytes.saturating_mul(extra));
            named.push(format!("${name}"));
        }
    }
    (total > QUOTABLE_BYTES).then(|| named.join(", "))
}

fn base_name(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(inner) => base_name(inner),
    }
}

/// Whether `value`, given where the schema expects `type_name` (or a list of it, at any
/// depth: a list's items have the same named type), holds an overlong enum value or field name.
fn holds_overlong(type_name: &str, value: &ConstValue) -> bool {
    if let ConstValue::List(items) = value {
        return items.iter().any(|item| holds_overlong(type_name, item));
    }
    match (super::served_schema().types.get(type_name), value) {
        (Some(ExtendedType::Enum(_)), ConstValue::String(text)) => text.len() > LONGEST_NAME,
        (Some(ExtendedType::Enum(_)), ConstValue::Enum(name)) => name.len() > LONGEST_NAME,
        (Some(ExtendedType::InputObject(input)), ConstValue::Object(fields)) => {
            fields.iter().any(|(name, value)| {
                name.len() > LONGEST_NAME
                    || input.fields.get(name.as_str()).is_some_and(|field| {
                        holds_overlong(field.ty.inner_named_type().as_str(), value)
                    })
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_value_written_many_times_is_refused_wherever_and_however_it_is_written() {
        let value = "A".repeat(100_000);
        let uses = |n: usize| {
            (0..n)
                .map(|i| format!("a{i}: auditEvents(filter: $f) {{ pageInfo {{ hasNextPage }} }}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let vars = Variables::from_json(serde_json::json!({ "f": { "action": value } }));
        for query in [
            format!("query($f: String) {{ {} }}", uses(20)),
            format!("query {{ {} }}", uses(20)),
            format!(
                "query($ f: AuditEventFilter) {{ {} }}",
                uses(20).replace("$f", "$ #c\n f")
            ),
        ] {
            assert_eq!(
                written_too_often(&query, &vars),
                Some("$f".to_owned()),
                "{query}"
            );
        }
        let note = Variables::from_json(serde_json::json!({ "n": "x".repeat(900_000) }));
        assert_eq!(
            written_too_often(
                "mutation($n: String) { updatePatient(input: { id: \"x\", expectedVersion: 1, clinicalNotes: $n }) { id } }",
                &note
            ),
            None,
            "a large note written once"
        );
        let small = Variables::from_json(
            serde_json::json!({ "id": "0b8f6c1e-0000-0000-0000-000000000000" }),
        );
        assert_eq!(
            written_too_often(
                &format!(
                    "query($id: ID!) {{ {} }}",
                    vec!["patient(id: $id) { id }"; 20].join(" ")
                ),
                &small
            ),
            None
        );
    }

    fn first_overlong(query: &str, variables: serde_json::Value) -> Option<String> {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        let (_, operation) = document.operations.iter().next().expect("an operation");
        overlong_value(&operation.node, &Variables::from_json(variables)).map(str::to_owned)
    }

    #[test]
    fn several_large_variables_share_one_budget() {
        // The third review: seven variables of 149 KB, each written seven times, each within
        // a budget of its own, built 7 MB of errors together.
        let value = "A".repeat(149_000);
        let names: Vec<String> = (0..7).map(|i| format!("v{i}")).collect();
        let vars = Variables::from_json(serde_json::Value::Object(
            names
                .iter()
                .map(|n| (n.clone(), serde_json::json!(value)))
                .collect(),
        ));
        let uses: Vec<String> = names
            .iter()
            .flat_map(|n| (0..7).map(move |i| format!("a{n}{i}: auditEvents(filter: {{ action: ${n} }}) {{ pageInfo {{ hasNextPage }} }}")))
            .collect();
        let query = format!("query {{ {} }}", uses.join(" "));
        assert!(written_too_often(&query, &vars).is_some());
    }

    #[test]
    fn overlong_enum_values_and_field_names_are_found_in_variables() {
        let long = "A".repeat(LONGEST_NAME + 1);
        let audit =
            "query($f: AuditEventFilter) { auditEvents(filter: $f) { pageInfo { hasNextPage } } }";
        assert_eq!(
            first_overlong(audit, serde_json::json!({ "f": { "action": long } })),
            Some("f".to_owned())
        );
        assert_eq!(
            first_overlong(audit, serde_json::json!({ "f": { long.clone(): 1 } })),
            Some("f".to_owned())
        );
        assert_eq!(
            first_overlong(audit, serde_json::json!({ "f": { "action": "READ" } })),
            None
        );
        assert_eq!(
            first_overlong(
                audit,
                serde_json::json!({ "f": { "action": "UNKNOWN_BUT_SHORT" } })
            ),
            None,
            "the engine explains short mistakes itself"
        );
    }

    #[test]
    fn long_text_where_the_schema_takes_text_is_not_refused() {
        let long = "x".repeat(100_000);
        assert_eq!(
            first_overlong(
                "query($s: String) { patients(search: $s) { edges { node { id } } } }",
                serde_json::json!({ "s": long })
            ),
            None
        );
        assert_eq!(
            first_overlong(
                "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { id } }",
                serde_json::json!({ "i": { "id": "x", "expectedVersion": 1, "clinicalNotes": long } })
            ),
            None
        );
    }

    use async_graphql::Name;
    use async_graphql::parser::parse_query;

    fn coerced(query: &str, given: serde_json::Value) -> Vec<(String, ConstValue)> {
        let doc = parse_query(query).expect("a document");
        let operation = doc.operations.iter().next().map(|(_, op)| &op.node);
        let mut variables = Variables::from_json(given);
        coerce(operation, &mut variables);
        variables
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    #[test]
    fn undeclared_variables_are_dropped_and_declared_defaults_filled_in() {
        let query = "query Q($a: Int, $b: Boolean = true, $c: String = \"x\") { me { id } }";
        let given = serde_json::json!({ "a": 1, "c": "given", "junk": [1, 2, 3] });
        assert_eq!(
            coerced(query, given),
            vec![
                ("a".to_owned(), ConstValue::Number(1.into())),
                ("b".to_owned(), ConstValue::Boolean(true)),
                ("c".to_owned(), ConstValue::String("given".into())),
            ]
        );
    }

    #[test]
    fn with_no_operation_to_run_no_variable_is_kept() {
        let mut variables = Variables::from_json(serde_json::json!({ "a": 1 }));
        coerce(None, &mut variables);
        assert!(variables.get(&Name::new("a")).is_none());
    }
}
