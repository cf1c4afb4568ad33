//! `rowguard operations manifest DIR`: the trusted-documents manifest from a directory of
//! `.graphql` files. Every document is validated against the served schema; fragments may live
//! in any file. Each operation's body is the operation and the fragments it uses, printed in one
//! canonical form; its id is the SHA-256 of that body. A comment line `# roles: coordinator`
//! in a file restricts the operations of that file to the roles listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use apollo_compiler::executable::{Fragment, Operation, Selection, SelectionSet};
use apollo_compiler::validation::DiagnosticList;
use apollo_compiler::{ExecutableDocument, Name, Node};
use sha2::{Digest, Sha256};

use super::manifest::{FORMAT, ManifestEntry, ManifestFile, served_schema};

/// Builds the manifest from the `.graphql` files directly in `dir`.
pub fn manifest_of(dir: &Path) -> Result<ManifestFile, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "graphql"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no .graphql files", dir.display()));
    }
    let schema = served_schema();
    let mut errors = DiagnosticList::new(Default::default());
    let mut builder = ExecutableDocument::builder(Some(&schema), &mut errors);
    let mut roles_of_file = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let roles = roles_comment(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        roles_of_file.insert(path.clone(), roles);
        builder = builder.parse(text, path);
    }
    let document = builder.build();
    if !errors.is_empty() {
        return Err(errors.to_string());
    }
    let document = document
        .validate(&schema)
        .map_err(|e| e.errors.to_string())?;

    let mut operations = Vec::new();
    for operation in document.operations.named.values() {
        let name = operation
            .name
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default();
        let body = body_of(operation, &document.fragments);
        let file = operation
            .location()
            .and_then(|location| document.sources.get(&location.file_id()))
            .map(|source| source.path().to_path_buf());
        let roles = file.and_then(|f| roles_of_file.get(&f).cloned().flatten());
        operations.push(ManifestEntry {
            id: hex(&Sha256::digest(body.as_bytes())),
            name,
            kind: operation.operation_type.to_string(),
            body,
            roles,
        });
    }
    if document.operations.anonymous.is_some() {
        return Err("every trusted operation needs a name (found an anonymous one)".into());
    }
    operations.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ManifestFile {
        format: FORMAT.into(),
        version: 1,
        operations,
    })
}

/// The roles of a `# roles: a, b` comment line, if the file has one. Any other comment that
/// speaks of roles (`# Roles: …`, `# roles = …`, `# allowed roles: …`, `# rolse: …`), an unknown
/// role, no role, and two roles lines are refused: a restriction misread as none would open the
/// file's operations to every role, so the file must say it plainly or not mention roles.
fn roles_comment(text: &str) -> Result<Option<Vec<String>>, String> {
    let mut found: Option<Vec<String>> = None;
    for line in text.lines() {
        let Some(comment) = line.trim().strip_prefix('#').map(str::trim) else {
            continue;
        };
        if !mentions_roles(comment) {
            continue;
        }
        let Some(listed) = comment.strip_prefix("roles:") else {
            return Err(format!(
                "the comment {comment:?} speaks of roles but is not a roles line: write `# roles: coordinator, auditor`, or reword it without the word"
            ));
        };
        if found.is_some() {
            return Err("more than one `# roles:` line".to_owned());
        }
        let roles: Vec<String> = listed
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        if roles.is_empty() {
            return Err("`# roles:` names no role".to_owned());
        }
        if let Some(unknown) = roles.iter().find(|r| {
            !crate::principal::AppRole::ALL
                .iter()
                .any(|known| known.as_str() == r.as_str())
        }) {
            return Err(format!(
                "unknown role {unknown:?} in `# roles:` (roles are clinician, coordinator, auditor)"
            ));
        }
        found = Some(roles);
    }
    Ok(found)
}

/// Whether a comment has a word that is, or is a transposition of, "role" or "roles" (in any
/// case, followed by anything: `Role(s)`, `roles=`, `rolse`).
fn mentions_roles(comment: &str) -> bool {
    let sorted = |word: &str| {
        let mut letters: Vec<char> = word.chars().collect();
        letters.sort_unstable();
        letters
    };
    comment
        .split(|c: char| !c.is_alphabetic())
        .map(str::to_lowercase)
        .any(|word| {
            word.starts_with("role")
                || sorted(&word) == sorted("roles")
                || sorted(&word) == sorted("role")
        })
}

/// The operation followed by the fragments it uses (by name), in one canonical print.
fn body_of(
    operation: &Node<Operation>,
    fragments: &apollo_compiler::executable::FragmentMap,
) -> String {
    let mut used = BTreeSet::new();
    collect_fragments(&operation.selection_set, fragments, &mut used);
    let mut single = ExecutableDocument::new();
    if let Some(name) = &operation.name {
        single
            .operations
            .named
            .insert(name.clone(), operation.clone());
    }
    for name in used {
        if let Some(fragment) = fragments.get(&name) {
            single.fragments.insert(name, fragment.clone());
        }
    }
    single.to_string()
}

fn collect_fragments(
    set: &SelectionSet,
    fragments: &apollo_compiler::executable::FragmentMap,
    used: &mut BTreeSet<Name>,
) {
    for selection in &set.selections {
        match selection {
            Selection::Field(field) => collect_fragments(&field.selection_set, fragments, used),
            Selection::InlineFragment(inline) => {
                collect_fragments(&inline.selection_set, fragments, used);
            }
            Selection::FragmentSpread(spread) => {
                if used.insert(spread.fragment_name.clone()) {
                    let fragment: Option<&Node<Fragment>> = fragments.get(&spread.fragment_name);
                    if let Some(fragment) = fragment {
                        collect_fragments(&fragment.selection_set, fragments, used);
                    }
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `rowguard operations manifest DIR [--out FILE]`.
pub fn run_command(dir: &Path, out: Option<&Path>) -> Result<(), String> {
    let manifest = manifest_of(dir)?;
    let mut text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    text.push('\n');
    match out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "wrote {} trusted operations to {}",
                manifest.operations.len(),
                path.display()
            );
        }
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
