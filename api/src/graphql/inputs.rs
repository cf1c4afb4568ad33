//! Caller input parsed once, at the edge of a resolver: ids and search text. A value that does
//! not parse is the caller's mistake (`BAD_USER_INPUT`, naming the argument), never a query.

use async_graphql::ID;
use uuid::Uuid;

use crate::error::ApiError;

/// A patient's id (a UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatientId(pub Uuid);

/// An enrolled person's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClinicianId(pub i32);

/// An emergency-access grant's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantId(pub i64);

impl PatientId {
    /// `argument` names where the id came from, for the error message (e.g. `input.patientId`).
    pub fn parse(id: &ID, argument: &str) -> Result<Self, ApiError> {
        id.parse()
            .map(Self)
            .map_err(|_| ApiError::bad_input(argument, "is not a patient id"))
    }
}

impl ClinicianId {
    pub fn parse(id: &ID, argument: &str) -> Result<Self, ApiError> {
        id.parse()
            .map(Self)
            .map_err(|_| ApiError::bad_input(argument, "is not a clinician id"))
    }
}

impl GrantId {
    pub fn parse(id: &ID, argument: &str) -> Result<Self, ApiError> {
        id.parse()
            .map(Self)
            .map_err(|_| ApiError::bad_input(argument, "is not a grant id"))
    }
}

/// A case-insensitive "contains" pattern for `ILIKE`, with LIKE's wildcards escaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchPattern(pub String);

impl SearchPattern {
    /// Most characters a search may have.
    pub const MAX_CHARS: usize = 100;

    /// `None` for no search or an empty one.
    pub fn parse(search: Option<String>) -> Result<Option<Self>, ApiError> {
        let Some(search) = search
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        if search.chars().count() > Self::MAX_CHARS {
            return Err(ApiError::bad_input(
                "search",
                &format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        let escaped = search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        Ok(Some(Self(format!("%{escaped}%"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_or_name_the_argument() {
        let id = Uuid::new_v4();
        assert_eq!(
            PatientId::parse(&ID(id.to_string()), "id").ok(),
            Some(PatientId(id))
        );
        let error = PatientId::parse(&ID("42".into()), "input.patientId").expect_err("not a uuid");
        assert!(
            error.message.starts_with("input.patientId"),
            "{}",
            error.message
        );
        assert_eq!(
            ClinicianId::parse(&ID("7".into()), "c").ok(),
            Some(ClinicianId(7))
        );
        assert!(ClinicianId::parse(&ID("seven".into()), "c").is_err());
        assert!(GrantId::parse(&ID("1.5".into()), "g").is_err());
    }

    #[test]
    fn search_escapes_like_wildcards() {
        let pattern = SearchPattern::parse(Some(" 50%_off\\ ".into())).expect("valid");
        assert_eq!(pattern, Some(SearchPattern("%50\\%\\_off\\\\%".into())));
    }

    #[test]
    fn an_empty_search_is_no_search() {
        assert_eq!(
            SearchPattern::parse(Some("   ".into())).expect("valid"),
            None
        );
        assert_eq!(SearchPattern::parse(None).expect("valid"), None);
    }

    #[test]
    fn a_long_search_is_refused() {
        assert!(SearchPattern::parse(Some("x".repeat(101))).is_err());
        assert!(SearchPattern::parse(Some("x".repeat(100))).is_ok());
    }
}
