//! The size of an operation as it will run: every fragment spread expanded where it is spread,
//! every alias counted each time its fragment is spread, and lists costed by how many items they
//! can return (a page size given by a variable counts as the variable's value, or its declared
//! default). Measured on the parsed document before anything executes; the walk stops at the
//! first limit it passes, and every selection it visits counts towards one (`__typename` and
//! introspection included), so even a fragment bomb (fragments spreading each other twice over)
//! costs no more than the limits allow, whatever its leaves are.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    Directive, ExecutableDocument, Field, OperationDefinition, Selection, SelectionSet,
    VariableDefinition,
};
use async_graphql::{Name, Positioned as Pos};
use async_graphql::{Value, Variables};

/// The limits an operation must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    pub max_depth: usize,
    pub max_fields: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub max_cost: u64,
    /// `first` when a list does not say.
    pub default_page_size: u64,
    /// Largest `first` counted (larger ones are refused by the resolver anyway).
    pub max_page_size: u64,
}

impl ShapeLimits {
    /// Selections of any kind (fields, `__typename`, introspection, fragment spreads) the walk
    /// visits before it refuses: what bounds the walk itself. Well above what `max_fields`
    /// allows with a `__typename` in every selection set, and above the standard introspection
    /// query (about 200).
    pub fn max_selections(&self) -> usize {
        self.max_fields.saturating_mul(4).max(1000)
    }

    /// Values passed to arguments and directives, and variables declared, counted node by node:
    /// the engine's validation copies an argument's value, its variables' values included, at
    /// every use, and compares each use with every declaration.
    pub fn max_values(&self) -> usize {
        self.max_selections()
    }
}

/// What the operation adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub depth: usize,
    /// Field selections, fragments expanded (`__typename` and introspection are free).
    pub fields: usize,
    /// Every selection visited, fragments expanded: fields of any kind and fragment spreads.
    pub selections: usize,
    /// Values passed to arguments and directives, fragments expanded: a list or an object and
    /// each item in it, a variable as its value (given, or its default), plus the variables
    /// each operation declares.
    pub values: usize,
    pub aliases: usize,
    pub root_fields: usize,
    /// The operation that runs asks for `__schema` or `__type` (the schema itself).
    pub introspects: bool,
    /// Every field that returns objects costs 1 for each object it can return, nested costs
    /// multiplied by the list sizes above them; scalar fields are free (they come with their row).
    pub cost: u64,
}

/// Why an operation was refused. The message is safe to show (names and numbers only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    #[error("the operation is nested {0} levels deep; at most {1} are allowed")]
    Depth(usize, usize),
    #[error("the operation selects more than {0} fields (fragments counted where they are spread)")]
    Fields(usize),
    #[error(
        "the operation has more than {0} selections once its fragments are expanded (`__typename` and introspection included)"
    )]
    Selections(usize),
    #[error("the operation uses more than {0} aliases (fragments counted where they are spread)")]
    Aliases(usize),
    #[error(
        "the operation selects more than {0} root fields (fragments counted where they are spread)"
    )]
    RootFields(usize),
    #[error(
        "the operation could return about {0} records; at most {1} are allowed (ask for smaller pages or fewer nested lists)"
    )]
    Cost(u64, u64),
    #[error(
        "{0} is not paged, so an operation may ask for it only once (aliases and fragments included); merge the selections"
    )]
    UnpagedRepeated(String),
    #[error(
        "an operation may search (or filter the audit trail on `action` or on two conditions) once, aliases and fragments included: it reads every record it could match, not only the page it returns"
    )]
    SearchRepeated,
    #[error(
        "variable ${0} is declared nullable without a default, but @include(if:) and @skip(if:) take Boolean!: declare it Boolean! or give it a default"
    )]
    NullableCondition(String),
    #[error("fragment {0} spreads itself")]
    FragmentCycle(String),
    #[error("fragments are spread inside each other more than {0} deep")]
    FragmentNesting(usize),
    #[error(
        "the operation passes more than {0} values to arguments and directives (lists and objects item by item, a variable as its value, fragments counted where they are spread)"
    )]
    Values(usize),
    #[error(
        "the fields answering as {0} in one selection set (fragments included) must be the same field with the same arguments"
    )]
    Conflict(String),
    #[error(
        "{0} is selected more than {1} times in one selection set (fragments included); select it once"
    )]
    SameName(String, usize),
    #[error("a field or directive is given more than {0} arguments")]
    Arguments(usize),
    #[error("fragment {0} is never used")]
    UnusedFragment(String),
    #[error("unknown fragment {0}")]
    UnknownFragment(String),
    #[error(
        "a text value contains the NUL character (U+0000), which PostgreSQL cannot store or compare"
    )]
    NulCharacter,
}

/// How many items a list field without a `first` argument is costed as. Care teams have no
/// limit of their own (10 is a generous team). The lists that are not paged (the directory, the
/// grants, a patient's access report) are costed as a full page (`ROWGUARD_MAX_PAGE_SIZE`'s
/// default) rather than by their caps (1,000 and 10,000), which would price the directory out
/// of a coordinator's quota; what bounds them is that each may be asked for once per operation
/// ([`is_unpaged`]).
fn fixed_list_size(field: &str) -> Option<u64> {
    match field {
        "careTeam" => Some(10),
        "clinicians" | "emergencyAccessGrants" | "patientAccessReport" => Some(UNPAGED_COST),
        _ => None,
    }
}

/// What one of the unpaged lists (or the FHIR bundle, a report as text) is costed as.
const UNPAGED_COST: u64 = 100;

/// Root fields that return a whole list (or report) with no paging: aliased side by side, each
/// copy would load the whole of it again, so an operation may ask for each once.
fn is_unpaged(field: &str) -> bool {
    matches!(
        field,
        "clinicians" | "emergencyAccessGrants" | "patientAccessReport" | "patientAccessFhirBundle"
    )
}

/// Connection fields whose `edges` repeat `first` times.
fn is_connection(field: &str) -> bool {
    matches!(field, "patients" | "auditEvents")
}

/// Most fields answering under one name in one selection set, fragments included. The engine's
/// validation compares each with the first and reports every difference (one error per
/// argument): 450 bare `id`s after an `id` with 450 arguments made 200,000 errors (2.7 GB).
const MAX_SAME_NAME: usize = 32;

/// Most arguments one field or directive is given (the schema's fields take at most three).
const MAX_ARGUMENTS: usize = 16;

/// How deep fragment spreads may nest (each spread inside the one before): the walk recurses once
/// per level, and the parser's own nesting limit does not apply across fragment definitions.
const MAX_SPREAD_NESTING: usize = 64;

/// Measures the operation of `doc` that will run (`None` when the request names none the
/// engine can pick; the engine then refuses it), refusing it at the first limit it passes.
/// Every other operation of the document is walked too, against the same bounds on selections
/// and values: the engine validates them all, fragments expanded, before it runs the one
/// selected. So is every fragment: one that no operation spreads is refused here (the engine
/// would refuse it too, but only after walking it).
pub fn measure(
    doc: &ExecutableDocument,
    operation: Option<&OperationDefinition>,
    variables: &Variables,
    limits: &ShapeLimits,
) -> Result<Shape, TooLarge> {
    let mut walk = Walk {
        doc,
        variables,
        definitions: &[],
        limits,
        shape: Shape::default(),
        spreading: Vec::new(),
        counting: Counting::Everything,
        used: HashSet::new(),
        variable_sizes: HashMap::new(),
        nul: false,
        unpaged: HashSet::new(),
        searched: false,
    };
    if let Some(operation) = operation {
        walk.operation(operation)?;
        let cost = walk.set(&operation.selection_set.node, 1, None)?;
        walk.shape.cost = cost;
        if cost > limits.max_cost {
            return Err(TooLarge::Cost(cost, limits.max_cost));
        }
    }
    walk.counting = Counting::SelectionsOnly;
    for (_, other) in doc.operations.iter() {
        if !operation.is_some_and(|selected| std::ptr::eq(selected, &other.node)) {
            walk.operation(&other.node)?;
            walk.set(&other.node.selection_set.node, 1, None)?;
        }
    }
    if let Some(unused) = doc
        .fragments
        .keys()
        .find(|name| !walk.used.contains(name.as_str()))
    {
        return Err(TooLarge::UnusedFragment(unused.to_string()));
    }
    Ok(walk.shape)
}

/// Whether two argument lists name the same arguments with the same values, in any order.
fn same_arguments(
    a: &[(Pos<Name>, Pos<async_graphql_value::Value>)],
    b: &[(Pos<Name>, Pos<async_graphql_value::Value>)],
) -> bool {
    a.len() == b.len()
        && a.iter().all(|(name, value)| {
            b.iter()
                .any(|(other, given)| other.node == name.node && given.node == value.node)
        })
}

/// The nodes of a constant value, counted up to a little past `limit`; `nul` is set if a string
/// in it holds a NUL character.
fn const_nodes(value: &Value, limit: usize, nul: &mut bool) -> usize {
    let mut nodes = 1usize;
    let items: Box<dyn Iterator<Item = &Value>> = match value {
        Value::List(items) => Box::new(items.iter()),
        Value::Object(fields) => Box::new(fields.values()),
        Value::String(text) => {
            *nul |= text.contains('\0');
            return 1;
        }
        _ => return 1,
    };
    for item in items {
        nodes = nodes.saturating_add(const_nodes(item, limit, nul));
        if nodes > limit {
            break;
        }
    }
    nodes
}

/// What a part of the document counts towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    /// The operation that runs, outside introspection.
    Everything,
    /// Inside `__schema` or `__type`: selections and aliases.
    Introspection,
    /// Operations that will not run (validated all the same): selections.
    SelectionsOnly,
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    variables: &'a Variables,
    /// The operation's variables as declared (for their default values).
    definitions: &'a [Pos<VariableDefinition>],
    limits: &'a ShapeLimits,
    shape: Shape,
    /// Fragments being expanded on the current path.
    spreading: Vec<&'a str>,
    counting: Counting,
    /// Fragments spread by any operation walked so far.
    used: HashSet<&'a str>,
    /// Nodes of each variable's value (given, or its default) of the operation being walked.
    variable_sizes: HashMap<Name, usize>,
    /// A string passed to an argument or directive holds a NUL character.
    nul: bool,
    /// The unpaged fields the running operation has asked for so far.
    unpaged: HashSet<&'a str>,
    /// The running operation has searched (a list field given a `search`).
    searched: bool,
}

impl<'a> Walk<'a> {
    /// Starts on `operation`: its variables, as declared, and its own directives.
    fn operation(&mut self, operation: &'a OperationDefinition) -> Result<(), TooLarge> {
        self.definitions = &operation.variable_definitions;
        self.variable_sizes.clear();
        self.count_values(operation.variable_definitions.len())?;
        self.directives(&operation.directives)
    }

    fn count_values(&mut self, nodes: usize) -> Result<(), TooLarge> {
        self.shape.values = self.shape.values.saturating_add(nodes);
        if self.shape.values > self.limits.max_values() {
            return Err(TooLarge::Values(self.limits.max_values()));
        }
        Ok(())
    }

    fn arguments(
        &mut self,
        arguments: &'a [(Pos<Name>, Pos<async_graphql_value::Value>)],
    ) -> Result<(), TooLarge> {
        if arguments.len() > MAX_ARGUMENTS {
            return Err(TooLarge::Arguments(MAX_ARGUMENTS));
        }
        for (_, value) in arguments {
            let nodes = self.value_nodes(&value.node);
            self.count_values(nodes)?;
        }
        // Refused here rather than by PostgreSQL, whose refusal would come only after the
        // request's transaction had begun (and as an error of the statement, not the input).
        if self.nul {
            return Err(TooLarge::NulCharacter);
        }
        Ok(())
    }

    fn directives(&mut self, directives: &'a [Pos<Directive>]) -> Result<(), TooLarge> {
        for directive in directives {
            self.arguments(&directive.node.arguments)?;
            // The spec's "variables in allowed position", which the engine does not apply to
            // directives: a nullable variable left out made the guarded field vanish silently.
            if matches!(directive.node.name.node.as_str(), "include" | "skip") {
                for (name, value) in &directive.node.arguments {
                    if let ("if", async_graphql_value::Value::Variable(variable)) =
                        (name.node.as_str(), &value.node)
                        && self.definitions.iter().any(|definition| {
                            definition.node.name.node == *variable
                                && definition.node.var_type.node.nullable
                                && definition.node.default_value.is_none()
                        })
                    {
                        return Err(TooLarge::NullableCondition(variable.to_string()));
                    }
                }
            }
        }
        Ok(())
    }

    /// The nodes of an argument's value, a variable counted as the value it stands for, counted
    /// up to a little past the bound (as [`const_nodes`]).
    fn value_nodes(&mut self, value: &async_graphql_value::Value) -> usize {
        use async_graphql_value::Value as V;
        let items: Box<dyn Iterator<Item = &V>> = match value {
            V::Variable(name) => return self.variable_nodes(name),
            V::List(items) => Box::new(items.iter()),
            V::Object(fields) => Box::new(fields.values()),
            V::String(text) => {
                self.nul |= text.contains('\0');
                return 1;
            }
            _ => return 1,
        };
        let mut nodes = 1usize;
        for item in items {
            nodes = nodes.saturating_add(self.value_nodes(item));
            if nodes > self.limits.max_values() {
                break;
            }
        }
        nodes
    }

    fn variable_nodes(&mut self, name: &Name) -> usize {
        if let Some(&nodes) = self.variable_sizes.get(name) {
            return nodes;
        }
        let nodes = self.variable(name).map_or(1, |value| {
            const_nodes(value, self.limits.max_values(), &mut self.nul)
        });
        self.variable_sizes.insert(name.clone(), nodes);
        nodes
    }

    /// A variable's value as the engine resolves it: the one given, else its declared default.
    fn variable(&self, name: &str) -> Option<&'a Value> {
        match self.variables.get(name) {
            Some(given) => Some(given),
            None => self
                .definitions
                .iter()
                .find(|d| d.node.name.node.as_str() == name)
                .and_then(|d| d.node.default_value.as_ref())
                .map(|default| &default.node),
        }
    }

    /// The cost of `set` at `depth` (root fields are at depth 1). `edges` is how many times an
    /// `edges` field directly inside repeats (set inside connections).
    fn set(
        &mut self,
        set: &'a SelectionSet,
        depth: usize,
        edges: Option<u64>,
    ) -> Result<u64, TooLarge> {
        // Once per selection set, its fragments included; they are then walked as its items.
        self.merges(set)?;
        self.items(set, depth, edges)
    }

    /// As [`Walk::set`], for the items of a set (or of a fragment spread in it) whose merges
    /// were already checked with the set's.
    fn items(
        &mut self,
        set: &'a SelectionSet,
        depth: usize,
        edges: Option<u64>,
    ) -> Result<u64, TooLarge> {
        let mut cost = 0u64;
        for item in &set.items {
            self.shape.selections += 1;
            if self.shape.selections > self.limits.max_selections() {
                return Err(TooLarge::Selections(self.limits.max_selections()));
            }
            let item_cost = match &item.node {
                Selection::Field(field) => self.field(&field.node, depth, edges)?,
                Selection::InlineFragment(fragment) => {
                    self.directives(&fragment.node.directives)?;
                    self.items(&fragment.node.selection_set.node, depth, edges)?
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if self.spreading.contains(&name) {
                        return Err(TooLarge::FragmentCycle(name.to_owned()));
                    }
                    if self.spreading.len() >= MAX_SPREAD_NESTING {
                        return Err(TooLarge::FragmentNesting(MAX_SPREAD_NESTING));
                    }
                    let fragment = self
                        .doc
                        .fragments
                        .get(&spread.node.fragment_name.node)
                        .ok_or_else(|| TooLarge::UnknownFragment(name.to_owned()))?;
                    self.used.insert(name);
                    self.directives(&spread.node.directives)?;
                    self.directives(&fragment.node.directives)?;
                    self.spreading.push(name);
                    let cost = self.items(&fragment.node.selection_set.node, depth, edges)?;
                    self.spreading.pop();
                    cost
                }
            };
            cost = cost.saturating_add(item_cost);
            if cost > self.limits.max_cost {
                return Err(TooLarge::Cost(cost, self.limits.max_cost));
            }
        }
        Ok(cost)
    }

    /// Refuses a selection set whose fields, fragments included, answer under one name but are
    /// different fields or take different arguments (the GraphQL spec's "field selections can be
    /// merged" rule, as one error here instead of one per difference and per fragment from the
    /// engine), or answer under one name too often. Expanding stops at the walk's own bound on
    /// selections, which the walk then reports.
    fn merges(&self, set: &'a SelectionSet) -> Result<(), TooLarge> {
        let mut seen: HashMap<&'a str, (&'a Field, usize)> = HashMap::new();
        let mut pending: Vec<(&'a SelectionSet, usize)> = vec![(set, 0)];
        let mut visited = 0usize;
        while let Some((set, nesting)) = pending.pop() {
            for item in &set.items {
                visited += 1;
                if visited > self.limits.max_selections() {
                    return Ok(());
                }
                match &item.node {
                    Selection::Field(field) => {
                        let field = &field.node;
                        if field.arguments.len() > MAX_ARGUMENTS {
                            return Err(TooLarge::Arguments(MAX_ARGUMENTS));
                        }
                        let key = field.response_key().node.as_str();
                        let Some((first, count)) = seen.get_mut(key) else {
                            seen.insert(key, (field, 1));
                            continue;
                        };
                        *count += 1;
                        if first.name.node != field.name.node
                            || !same_arguments(&first.arguments, &field.arguments)
                        {
                            return Err(TooLarge::Conflict(key.to_owned()));
                        }
                        if *count > MAX_SAME_NAME && key != "__typename" {
                            return Err(TooLarge::SameName(key.to_owned(), MAX_SAME_NAME));
                        }
                    }
                    Selection::InlineFragment(fragment) => {
                        pending.push((&fragment.node.selection_set.node, nesting));
                    }
                    Selection::FragmentSpread(spread) if nesting < MAX_SPREAD_NESTING => {
                        if let Some(fragment) =
                            self.doc.fragments.get(&spread.node.fragment_name.node)
                        {
                            pending.push((&fragment.node.selection_set.node, nesting + 1));
                        }
                    }
                    Selection::FragmentSpread(_) => {}
                }
            }
        }
        Ok(())
    }

    fn field(
        &mut self,
        field: &'a Field,
        depth: usize,
        edges: Option<u64>,
    ) -> Result<u64, TooLarge> {
        let name = field.name.node.as_str();
        self.arguments(&field.arguments)?;
        self.directives(&field.directives)?;
        if self.counting == Counting::SelectionsOnly {
            return self
                .set(&field.selection_set.node, depth + 1, None)
                .map(|_| 0);
        }
        if field.alias.is_some() {
            self.shape.aliases += 1;
            if self.shape.aliases > self.limits.max_aliases {
                return Err(TooLarge::Aliases(self.limits.max_aliases));
            }
        }
        // Introspection is governed by its own setting and its standard query is large by
        // design, so it adds no fields, depth or cost; but its selections are still walked and
        // counted, so it cannot hide a fragment bomb or an alias fan-out.
        if self.counting == Counting::Everything && matches!(name, "__schema" | "__type") {
            self.shape.introspects = true;
        }
        if self.counting == Counting::Introspection || name.starts_with("__") {
            let outer = std::mem::replace(&mut self.counting, Counting::Introspection);
            let walked = self.set(&field.selection_set.node, depth + 1, None);
            self.counting = outer;
            return walked.map(|_| 0);
        }
        if depth > self.limits.max_depth {
            return Err(TooLarge::Depth(depth, self.limits.max_depth));
        }
        self.shape.depth = self.shape.depth.max(depth);
        self.shape.fields += 1;
        if self.shape.fields > self.limits.max_fields {
            return Err(TooLarge::Fields(self.limits.max_fields));
        }
        if depth == 1 {
            self.shape.root_fields += 1;
            if self.shape.root_fields > self.limits.max_root_fields {
                return Err(TooLarge::RootFields(self.limits.max_root_fields));
            }
        }
        if is_unpaged(name) && !self.unpaged.insert(name) {
            return Err(TooLarge::UnpagedRepeated(name.to_owned()));
        }
        let children = &field.selection_set.node;
        if children.items.is_empty() {
            // A report returned as one text value is as dear as the list it is made from.
            return Ok(if is_unpaged(name) { UNPAGED_COST } else { 0 });
        }
        let (repeat, listed) = match name {
            "edges" => (edges.unwrap_or(1), true),
            other => fixed_list_size(other).map_or((1, false), |size| (size, true)),
        };
        // A search is an unindexed match over every record the caller may see (a coordinator:
        // all of them), whatever page it returns: one per operation, and it costs a full page of
        // records more than what it returns. Twenty aliased one-record searches were 60 units
        // for 10 s of a database backend.
        let searches = self.searches(field);
        if searches {
            if self.searched {
                return Err(TooLarge::SearchRepeated);
            }
            self.searched = true;
        }
        let surcharge = if searches {
            self.limits.max_page_size
        } else {
            0
        };
        let inner_edges = is_connection(name).then(|| self.page_size(field));
        let inner = self.set(children, depth + 1, inner_edges)?;
        // Every item of a list is a record, even one that selects only scalars.
        let per_item = if listed { inner.max(1) } else { inner };
        Ok(1u64
            .saturating_add(repeat.saturating_mul(per_item))
            .saturating_add(surcharge))
    }

    /// The `first` a connection field asks for (a literal, or a variable's value or declared
    /// default, as the engine will resolve it), within the page limits. Anything else (a list,
    /// an object) is not a page size the engine accepts; it is read by reference, never copied,
    /// so a value built to be huge costs nothing here.
    fn page_size(&self, field: &Field) -> u64 {
        let first = field
            .arguments
            .iter()
            .find(|(name, _)| name.node.as_str() == "first")
            .and_then(|(_, value)| match &value.node {
                async_graphql_value::Value::Number(n) => Some(n.as_u64().unwrap_or(0)),
                async_graphql_value::Value::Variable(name) => self.variable_number(name),
                _ => None,
            });
        first.map_or(self.limits.default_page_size, |n| {
            n.min(self.limits.max_page_size)
        })
    }

    /// Whether `field` reads past the records it returns: given a `search` that is not blank
    /// (the resolvers read a blank one as none), or the audit trail filtered on `action` without
    /// a patient or a person (no index leads to a rare action: the trail is scanned).
    fn searches(&self, field: &Field) -> bool {
        let argument = |name: &str| {
            field
                .arguments
                .iter()
                .find(|(given, _)| given.node.as_str() == name)
                .map(|(_, value)| &value.node)
        };
        if field.name.node.as_str() == "auditEvents" {
            // One condition alone is led by its index (a patient's events, a person's, a
            // period) and read only as far as the page; `action`, or two conditions together,
            // read past the page (a patient's whole history, filtered row by row).
            let filter = argument("filter");
            let sets = |key: &str| filter.is_some_and(|filter| self.sets_field(filter, key));
            let conditions = usize::from(sets("patientId"))
                + usize::from(sets("clinicianId"))
                + usize::from(sets("from") || sets("to"));
            return sets("action") || conditions >= 2;
        }
        argument("search").is_some_and(|value| match value {
            async_graphql_value::Value::String(text) => !text.trim().is_empty(),
            async_graphql_value::Value::Variable(name) => matches!(
                self.variable(name),
                Some(Value::String(text)) if !text.trim().is_empty()
            ),
            async_graphql_value::Value::Null => false,
            // Not text: the engine refuses it before anything runs.
            _ => true,
        })
    }

    /// Whether the input object `value` (written out, or a variable's) sets `key` to a value
    /// other than null.
    fn sets_field(&self, value: &async_graphql_value::Value, key: &str) -> bool {
        match value {
            async_graphql_value::Value::Object(fields) => {
                fields.get(key).is_some_and(|field| match field {
                    async_graphql_value::Value::Null => false,
                    async_graphql_value::Value::Variable(name) => self
                        .variable(name)
                        .is_some_and(|value| !matches!(value, Value::Null)),
                    _ => true,
                })
            }
            async_graphql_value::Value::Variable(name) => matches!(
                self.variable(name),
                Some(Value::Object(fields))
                    if fields.get(key).is_some_and(|field| !matches!(field, Value::Null))
            ),
            _ => false,
        }
    }

    /// A variable's value if it is a whole number: the one given, else its declared default.
    fn variable_number(&self, name: &str) -> Option<u64> {
        match self.variable(name)? {
            Value::Number(n) => Some(n.as_u64().unwrap_or(0)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ShapeLimits = ShapeLimits {
        max_depth: 12,
        max_fields: 250,
        max_aliases: 30,
        max_root_fields: 20,
        max_cost: 2000,
        default_page_size: 20,
        max_page_size: 100,
    };

    fn shape(query: &str) -> Result<Shape, TooLarge> {
        shape_with(query, Variables::default())
    }

    fn shape_with(query: &str, variables: Variables) -> Result<Shape, TooLarge> {
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        let (_, op) = doc.operations.iter().next().expect("an operation");
        measure(&doc, Some(&op.node), &variables, &LIMITS)
    }

    use async_graphql::Name;

    #[test]
    fn root_fields_spread_from_a_fragment_are_counted() {
        let fields: Vec<String> = (0..25).map(|i| format!("m{i}: me {{ id }}")).collect();
        let query = format!(
            "query Q {{ ...F }} fragment F on Query {{ {} }}",
            fields.join(" ")
        );
        // 25 aliases would already be refused above 30; count roots before aliases bite.
        let limits = ShapeLimits {
            max_aliases: 1000,
            ..LIMITS
        };
        let doc = async_graphql::parser::parse_query(&query).expect("parses");
        let (_, op) = doc.operations.iter().next().expect("op");
        assert_eq!(
            measure(&doc, Some(&op.node), &Variables::default(), &limits),
            Err(TooLarge::RootFields(20))
        );
        let inline = format!("{{ ... on Query {{ {} }} }}", fields.join(" "));
        let doc = async_graphql::parser::parse_query(&inline).expect("parses");
        let (_, op) = doc.operations.iter().next().expect("op");
        assert_eq!(
            measure(&doc, Some(&op.node), &Variables::default(), &limits),
            Err(TooLarge::RootFields(20))
        );
    }

    #[test]
    fn fields_that_cannot_be_merged_are_refused_once_fragments_included() {
        // A review: the engine reported every difference between same-named fields, once per
        // argument and again for each fragment on the path (200,000 errors, 2.7 GB).
        let args: Vec<String> = (0..10).map(|i| format!("a{i}: 1")).collect();
        let query = format!(
            "query A {{ me {{ ...F1 }} }} fragment F1 on Clinician {{ ...F0 }} \
             fragment F0 on Clinician {{ id({}) id id }}",
            args.join(" ")
        );
        assert_eq!(shape(&query), Err(TooLarge::Conflict("id".into())));
        assert_eq!(
            shape("{ me { x: id ... on Clinician { x: displayName } } }"),
            Err(TooLarge::Conflict("x".into()))
        );
        let many = vec!["id"; MAX_SAME_NAME + 1].join(" ");
        assert_eq!(
            shape(&format!("{{ me {{ {many} }} }}")),
            Err(TooLarge::SameName("id".into(), MAX_SAME_NAME))
        );
        let arguments: Vec<String> = (0..=MAX_ARGUMENTS).map(|i| format!("a{i}: 1")).collect();
        assert_eq!(
            shape(&format!("{{ me {{ id({}) }} }}", arguments.join(" "))),
            Err(TooLarge::Arguments(MAX_ARGUMENTS))
        );
        // What Apollo Client sends: the same field in the set and in its fragments.
        assert!(
            shape(
                "query Q { me { id __typename ...C ...D } } \
                 fragment C on Clinician { id __typename displayName } \
                 fragment D on Clinician { id __typename patients(first: 5) { edges { node { id } } } }"
            )
            .is_ok()
        );
    }

    #[test]
    fn aliases_in_a_fragment_count_every_time_it_is_spread() {
        let query = "query Q { a: me { ...F } b: me { ...F } c: me { ...F } } \
                     fragment F on Clinician { x1: id x2: id x3: id x4: id x5: id x6: id x7: id x8: id x9: id x10: id }";
        assert_eq!(shape(query), Err(TooLarge::Aliases(30)));
    }

    #[test]
    fn lists_cost_by_their_first() {
        let page = |first: u64| {
            shape(&format!(
                "{{ patients(first: {first}) {{ edges {{ node {{ id careTeam {{ clinician {{ id }} }} }} }} pageInfo {{ hasNextPage }} }} }}"
            ))
            .expect("accepted")
            .cost
        };
        // patients 1 + edges (1 + first × node (1 + careTeam (1 + 10 × clinician 1))) + pageInfo 1
        assert_eq!(page(10), 1 + (1 + 10 * 12) + 1);
        assert_eq!(page(100), 1 + (1 + 100 * 12) + 1);
        let mut vars = Variables::default();
        vars.insert(Name::new("n"), async_graphql::Value::from(50));
        let by_variable = shape_with(
            "query($n: Int) { patients(first: $n) { edges { node { careTeam { clinician { id } } } } } }",
            vars,
        )
        .expect("accepted");
        assert_eq!(by_variable.cost, 1 + (1 + 50 * 12));
    }

    #[test]
    fn every_item_of_a_list_counts_even_when_it_selects_only_scalars() {
        // Before: a list whose items select only scalars cost 1 however long it was.
        assert_eq!(
            shape("{ clinicians { id displayName } }").map(|s| s.cost),
            Ok(101)
        );
        assert_eq!(
            shape("{ patient(id: \"p\") { careTeam { careRole } } }").map(|s| s.cost),
            Ok(12)
        );
        assert_eq!(
            shape("{ patients(first: 50) { edges { cursor } } }").map(|s| s.cost),
            Ok(52)
        );
    }

    #[test]
    fn a_search_costs_a_full_page_more_and_may_be_asked_once_per_operation() {
        // Before: twenty aliased searches of one record each cost 60 units and held a database
        // backend for 10 s (every record is matched, whatever the page).
        let plain = shape("{ patients(first: 1) { edges { cursor } } }").map(|s| s.cost);
        assert_eq!(
            shape("{ patients(first: 1, search: \"zz\") { edges { cursor } } }").map(|s| s.cost),
            plain.clone().map(|cost| cost + 100)
        );
        assert_eq!(
            shape("{ patients(first: 1, search: null) { edges { cursor } } }").map(|s| s.cost),
            plain
        );
        let twice = "{ a: patients(first: 1, search: \"a\") { edges { cursor } } \
                     b: clinicians(search: \"b\") { id } }";
        assert_eq!(shape(twice), Err(TooLarge::SearchRepeated));
        let by_fragment = "query($s: String) { ...F ...G } \
                           fragment F on Query { a: patients(search: $s) { edges { cursor } } } \
                           fragment G on Query { b: patients(search: $s) { edges { cursor } } }";
        let vars = Variables::from_json(serde_json::json!({ "s": "x" }));
        assert_eq!(shape_with(by_fragment, vars), Err(TooLarge::SearchRepeated));
        let unset = Variables::from_json(serde_json::json!({}));
        assert!(shape_with(by_fragment, unset).is_ok());
    }

    #[test]
    fn a_nullable_variable_without_a_default_cannot_decide_include_or_skip() {
        // A review: `$x: Boolean` left out dropped the field it guarded, silently.
        for query in [
            "query($x: Boolean) { me { id displayName @include(if: $x) } }",
            "query($x: Boolean) { me { id ... on Clinician @skip(if: $x) { displayName } } }",
        ] {
            assert_eq!(
                shape(query),
                Err(TooLarge::NullableCondition("x".into())),
                "{query}"
            );
        }
        for query in [
            "query($x: Boolean!) { me { id displayName @include(if: $x) } }",
            "query($x: Boolean = true) { me { id displayName @include(if: $x) } }",
        ] {
            assert!(shape(query).is_ok(), "{query}");
        }
    }

    #[test]
    fn a_blank_search_is_no_search() {
        // A review: an empty search box (`search: ""`) was charged and counted as a search, so a
        // form asking for patients and clinicians with it was refused.
        let query = "query($s: String) { patients(first: 1, search: $s) { edges { cursor } } \
                     clinicians(search: $s) { id } }";
        for blank in ["", "   "] {
            let vars = Variables::from_json(serde_json::json!({ "s": blank }));
            assert!(shape_with(query, vars).is_ok(), "{blank:?}");
        }
        let plain = shape("{ patients(first: 1) { edges { cursor } } }").map(|s| s.cost);
        assert_eq!(
            shape("{ patients(first: 1, search: \" \") { edges { cursor } } }").map(|s| s.cost),
            plain
        );
    }

    #[test]
    fn the_audit_trail_filtered_on_action_alone_counts_as_a_search() {
        // A review: twenty aliased `auditEvents(filter: {action: REVIEW})` scanned the trail
        // twenty times for 60 units.
        let twice = "{ a: auditEvents(first: 1, filter: { action: REVIEW }) { edges { cursor } } \
                     b: auditEvents(first: 1, filter: { action: ENROLL }) { edges { cursor } } }";
        assert_eq!(shape(twice), Err(TooLarge::SearchRepeated));
        let by_variable = "query($f: AuditEventFilter) { \
                           a: auditEvents(first: 1, filter: $f) { edges { cursor } } \
                           b: auditEvents(first: 1, filter: $f) { edges { cursor } } }";
        let action = Variables::from_json(serde_json::json!({ "f": { "action": "REVIEW" } }));
        assert_eq!(
            shape_with(by_variable, action),
            Err(TooLarge::SearchRepeated)
        );
        // Two conditions together read past the page too (a review: a patient and an action
        // read the patient's whole history, twenty times); one alone is led by its index.
        for both in [
            serde_json::json!({ "f": { "action": "REVIEW", "clinicianId": "1" } }),
            serde_json::json!({ "f": { "patientId": "p", "clinicianId": "1" } }),
            serde_json::json!({ "f": { "patientId": "p", "from": "2030-01-01T00:00:00Z" } }),
        ] {
            let vars = Variables::from_json(both);
            assert_eq!(shape_with(by_variable, vars), Err(TooLarge::SearchRepeated));
        }
        for alone in [
            serde_json::json!({ "f": { "patientId": "p" } }),
            serde_json::json!({ "f": { "clinicianId": "1" } }),
            serde_json::json!({ "f": { "from": "2030-01-01T00:00:00Z", "to": "2031-01-01T00:00:00Z" } }),
        ] {
            let vars = Variables::from_json(alone);
            assert!(shape_with(by_variable, vars).is_ok());
        }
        let plain = shape("{ auditEvents(first: 1) { edges { cursor } } }").map(|s| s.cost);
        assert_eq!(
            shape("{ auditEvents(first: 1, filter: { action: READ }) { edges { cursor } } }")
                .map(|s| s.cost),
            plain.map(|cost| cost + 100)
        );
    }

    #[test]
    fn an_unpaged_list_may_be_asked_for_once_per_operation() {
        let refused = |query: &str, field: &str| {
            assert_eq!(
                shape(query),
                Err(TooLarge::UnpagedRepeated(field.into())),
                "{query}"
            );
        };
        refused(
            "{ a: clinicians { id } b: clinicians { id } }",
            "clinicians",
        );
        refused(
            "{ ...F ...F } fragment F on Query { emergencyAccessGrants { id } }",
            "emergencyAccessGrants",
        );
        refused(
            "{ a: patientAccessFhirBundle(patientId: \"p\") b: patientAccessFhirBundle(patientId: \"q\") }",
            "patientAccessFhirBundle",
        );
        refused(
            "{ a: patientAccessReport(patientId: \"p\") { occurredAt } b: patientAccessReport(patientId: \"q\") { occurredAt } }",
            "patientAccessReport",
        );
        let each_once = "{ clinicians { id } emergencyAccessGrants { id } \
            patientAccessReport(patientId: \"p\") { occurredAt } patientAccessFhirBundle(patientId: \"p\") }";
        assert_eq!(shape(each_once).map(|s| s.cost), Ok(4 * 101 - 1));
    }

    #[test]
    fn the_first_reviews_amplification_query_is_refused() {
        let inner = "patients(first:100){edges{node{careTeam{clinician{patients(first:100){edges{node{careTeam{clinician{id}}}}}}}}}}";
        let aliases: Vec<String> = (0..30).map(|i| format!("a{i}: {inner}")).collect();
        let query = format!(
            "query Amp {{ ...F }} fragment F on Query {{ {} }}",
            aliases.join(" ")
        );
        assert!(
            matches!(shape(&query), Err(TooLarge::Cost(..))),
            "{:?}",
            shape(&query)
        );
    }

    #[test]
    fn a_fragment_bomb_stops_at_the_field_limit() {
        // Each level spreads the next twice: 2^40 fields if expanded in full.
        let mut fragments = String::from("fragment F40 on Clinician { id }");
        for level in (0..40).rev() {
            fragments.push_str(&format!(
                " fragment F{level} on Clinician {{ ...F{next} ...F{next} }}",
                next = level + 1
            ));
        }
        let query = format!("{{ me {{ ...F0 }} }} {fragments}");
        // The one field, repeated, is refused even before the fields are counted.
        assert_eq!(
            shape(&query),
            Err(TooLarge::SameName("id".into(), MAX_SAME_NAME))
        );
    }

    #[test]
    fn a_fragment_bomb_of_typename_stops_at_the_selection_limit() {
        // `__typename` adds no field, depth or cost: only the count of selections stops it.
        let mut fragments = String::from("fragment F40 on Query { __typename }");
        for level in (0..40).rev() {
            fragments.push_str(&format!(
                " fragment F{level} on Query {{ ...F{next} ...F{next} }}",
                next = level + 1
            ));
        }
        let query = format!("{{ ...F0 }} {fragments}");
        assert_eq!(shape(&query), Err(TooLarge::Selections(1000)));
        let inside = format!(
            "{{ __schema {{ ...G0 }} }} {}",
            fragments
                .replace("on Query", "on __Schema")
                .replace("F", "G")
        );
        assert_eq!(shape(&inside), Err(TooLarge::Selections(1000)));
    }

    fn bomb(on: &str, leaf: &str) -> String {
        let mut fragments = format!("fragment F40 on {on} {{ {leaf} }}");
        for level in (0..40).rev() {
            fragments.push_str(&format!(
                " fragment F{level} on {on} {{ ...F{next} ...F{next} }}",
                next = level + 1
            ));
        }
        fragments
    }

    #[test]
    fn operations_that_will_not_run_count_towards_the_selection_limit() {
        // The engine validates every operation, fragments expanded, before it runs the one
        // named: a bomb in another operation must be refused too.
        let query = format!(
            "query A {{ me {{ id }} }} query B {{ ...F0 }} {}",
            bomb("Query", "__typename")
        );
        let doc = async_graphql::parser::parse_query(&query).expect("parses");
        let a = doc
            .operations
            .iter()
            .find(|(name, _)| name.is_some_and(|n| n.as_str() == "A"))
            .map(|(_, op)| &op.node)
            .expect("A");
        let measured = |operation| measure(&doc, operation, &Variables::default(), &LIMITS);
        assert_eq!(measured(Some(a)), Err(TooLarge::Selections(1000)));
        assert_eq!(
            measured(None),
            Err(TooLarge::Selections(1000)),
            "none selected"
        );
        let fine = "query A { me { id } } query B { patients { edges { cursor } } }";
        let doc = async_graphql::parser::parse_query(fine).expect("parses");
        assert!(measure(&doc, None, &Variables::default(), &LIMITS).is_ok());
    }

    #[test]
    fn fragments_spread_inside_each_other_nest_at_most_64_deep() {
        let mut fragments = String::from("fragment F70 on Query { __typename }");
        for level in (0..70).rev() {
            fragments.push_str(&format!(
                " fragment F{level} on Query {{ ...F{} }}",
                level + 1
            ));
        }
        let query = format!("{{ ...F0 }} {fragments}");
        assert_eq!(shape(&query), Err(TooLarge::FragmentNesting(64)));
    }

    #[test]
    fn a_page_size_that_is_not_a_number_counts_as_the_default() {
        // A list in place of `first` is refused by the engine; here it costs as the default
        // page size (and its values count, below the bound on values).
        let default: Vec<&str> = vec!["0"; 10];
        let uses: Vec<&str> = vec!["$v"; 50];
        let query = format!(
            "query($v: Int = [{}]) {{ patients(first: [{}]) {{ edges {{ node {{ id }} }} }} }}",
            default.join(" "),
            uses.join(" ")
        );
        assert_eq!(shape(&query).expect("measured").cost, 1 + (1 + 20));
    }

    #[test]
    fn a_nul_character_in_any_text_passed_to_an_argument_is_refused() {
        assert_eq!(
            shape(r#"{ patients(search: "Ja\u0000ne") { edges { cursor } } }"#),
            Err(TooLarge::NulCharacter)
        );
        let mut vars = Variables::default();
        vars.insert(
            Name::new("input"),
            async_graphql::Value::from_json(serde_json::json!({ "notes": ["ok", "a\u{0}b"] }))
                .expect("value"),
        );
        let query = "mutation($input: UpdatePatientInput!) { updatePatient(input: $input) { id } }";
        assert_eq!(shape_with(query, vars), Err(TooLarge::NulCharacter));
        let defaulted =
            r#"query($s: String = "x\u0000") { patients(search: $s) { edges { cursor } } }"#;
        assert_eq!(shape(defaulted), Err(TooLarge::NulCharacter));
        assert!(shape(r#"{ patients(search: "Jane") { edges { cursor } } }"#).is_ok());
    }

    #[test]
    fn a_fragment_no_operation_spreads_is_refused() {
        let query =
            "{ __typename } fragment f0 on Query { ...f1 } fragment f1 on Query { __typename }";
        assert!(matches!(shape(query), Err(TooLarge::UnusedFragment(_))));
    }

    #[test]
    fn values_passed_to_arguments_count_item_by_item_and_variables_as_their_value() {
        let mut vars = Variables::default();
        vars.insert(
            Name::new("v"),
            async_graphql::Value::List(vec![async_graphql::Value::from(0); 600]),
        );
        let twice = "query($v: Int) { a: patients(first: $v) { edges { cursor } } b: patients(first: $v) { edges { cursor } } }";
        assert_eq!(shape_with(twice, vars.clone()), Err(TooLarge::Values(1000)));
        let once = "query($v: Int) { patients(first: $v) { edges { cursor } } }";
        assert_eq!(shape_with(once, vars).expect("accepted").values, 1 + 601);
        let arguments: Vec<String> = (0..1001).map(|i| format!("a{i}: 1")).collect();
        let wide = format!("{{ me({}) {{ id }} }}", arguments.join(" "));
        assert_eq!(shape(&wide), Err(TooLarge::Arguments(MAX_ARGUMENTS)));
        let declared: Vec<String> = (0..1001).map(|i| format!("$v{i}: Int")).collect();
        let many = format!("query({}) {{ me {{ id }} }}", declared.join(" "));
        assert_eq!(shape(&many), Err(TooLarge::Values(1000)));
    }

    #[test]
    fn aliases_inside_introspection_count() {
        let fields: Vec<String> = (0..20).map(|i| format!("f{i}: name")).collect();
        let types: Vec<String> = (0..20)
            .map(|i| format!("t{i}: types {{ {} }}", fields.join(" ")))
            .collect();
        let query = format!("{{ __schema {{ {} }} }}", types.join(" "));
        assert_eq!(shape(&query), Err(TooLarge::Aliases(30)));
    }

    #[test]
    fn the_standard_introspection_query_is_accepted_and_free() {
        // graphql-js 16's `getIntrospectionQuery` with every option on, as GraphiQL sends it.
        let query = include_str!("testdata/introspection_query.graphql");
        let shape = shape(query).expect("accepted");
        assert_eq!((shape.fields, shape.cost, shape.aliases), (0, 0, 0));
        assert!(shape.selections < 1000, "{shape:?}");
    }

    #[test]
    fn a_page_size_from_a_variables_default_is_costed() {
        let query = "query($n: Int = 100) { patients(first: $n) { edges { node { careTeam { clinician { id } } } } } }";
        assert_eq!(shape(query).expect("accepted").cost, 1 + (1 + 100 * 12));
        let mut given = Variables::default();
        given.insert(Name::new("n"), async_graphql::Value::from(5));
        assert_eq!(
            shape_with(query, given).expect("accepted").cost,
            1 + (1 + 5 * 12),
            "a value given overrides the default"
        );
        let mut null = Variables::default();
        null.insert(Name::new("n"), async_graphql::Value::Null);
        assert_eq!(
            shape_with(query, null).expect("accepted").cost,
            1 + (1 + 20 * 12),
            "an explicit null is the default page size, as the resolver reads it"
        );
    }

    #[test]
    fn a_fragment_cycle_is_refused() {
        let query =
            "{ me { ...A } } fragment A on Clinician { ...B } fragment B on Clinician { ...A }";
        assert!(matches!(shape(query), Err(TooLarge::FragmentCycle(_))));
    }

    #[test]
    fn depth_counts_through_fragments() {
        let limits = ShapeLimits {
            max_depth: 5,
            ..LIMITS
        };
        let measure_with = |query: &str| {
            let doc = async_graphql::parser::parse_query(query).expect("parses");
            let (_, op) = doc.operations.iter().next().expect("op");
            measure(&doc, Some(&op.node), &Variables::default(), &limits)
        };
        // Six deep once the fragment is expanded; five without it.
        let deep = "{ ...F } fragment F on Query { patients { edges { node { careTeam { clinician { id } } } } } }";
        assert_eq!(measure_with(deep), Err(TooLarge::Depth(6, 5)));
        let shallow = "{ ...F } fragment F on Query { patients { edges { node { careTeam { careRole } } } } }";
        assert!(measure_with(shallow).is_ok());
    }

    #[test]
    fn the_client_operations_are_well_within_the_limits() {
        let my_patients = "fragment S on Patient { __typename id mrn } \
            query MyPatients($first: Int) { patients(first: $first) { edges { cursor node { ...S careTeam { careRole clinician { id displayName } } } } pageInfo { hasNextPage endCursor } } }";
        let mut vars = Variables::default();
        vars.insert(Name::new("first"), async_graphql::Value::from(100));
        let shape = shape_with(my_patients, vars).expect("accepted");
        assert!(shape.cost <= 1300, "{shape:?}");
    }
}
