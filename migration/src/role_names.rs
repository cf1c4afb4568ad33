use std::fmt;

/// The database roles of one Rowguard installation, all named `<prefix>_<purpose>`.
///
/// Roles are shared by every database of a PostgreSQL cluster; the prefix keeps two Rowguard
/// databases on one cluster from sharing (and dropping) each other's roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleNames {
    prefix: String,
}

/// A role prefix that is not a plain lower-case SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRolePrefix(pub String);

impl fmt::Display for InvalidRolePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "role prefix {:?} must start with a lower-case letter and contain only a-z, 0-9 and _ \
             (at most 40 characters)",
            self.0
        )
    }
}

impl std::error::Error for InvalidRolePrefix {}

impl RoleNames {
    /// The prefix used when none is configured.
    pub const DEFAULT_PREFIX: &'static str = "rowguard";

    /// The session setting through which migrations learn the prefix.
    pub const PREFIX_SETTING: &'static str = "rowguard.role_prefix";

    /// Validates the prefix: it is spliced into SQL as an identifier, so only a plain
    /// lower-case identifier is accepted (no quoting rules to get wrong).
    pub fn new(prefix: &str) -> Result<Self, InvalidRolePrefix> {
        let mut chars = prefix.chars();
        let valid_start = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid_start && valid_rest && prefix.len() <= 40 {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(InvalidRolePrefix(prefix.to_owned()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Owns the schema; runs migrations; never serves requests.
    pub fn owner(&self) -> String {
        format!("{}_owner", self.prefix)
    }

    /// The gateway's login role (`DATABASE_URL`).
    pub fn gateway(&self) -> String {
        format!("{}_gateway", self.prefix)
    }

    pub fn clinician(&self) -> String {
        format!("{}_clinician", self.prefix)
    }

    pub fn coordinator(&self) -> String {
        format!("{}_coordinator", self.prefix)
    }

    pub fn auditor(&self) -> String {
        format!("{}_auditor", self.prefix)
    }

    /// The clinician role with write privileges (mutations only).
    pub fn clinician_writer(&self) -> String {
        format!("{}_clinician_writer", self.prefix)
    }

    pub fn coordinator_writer(&self) -> String {
        format!("{}_coordinator_writer", self.prefix)
    }

    pub fn auditor_writer(&self) -> String {
        format!("{}_auditor_writer", self.prefix)
    }

    /// Every application role the gateway switches to: readers, then writers.
    pub fn application_roles(&self) -> [String; 6] {
        [
            self.clinician(),
            self.coordinator(),
            self.auditor(),
            self.clinician_writer(),
            self.coordinator_writer(),
            self.auditor_writer(),
        ]
    }

    /// The `(name, value)` connection option that tells the migrations this prefix.
    pub fn connection_option(&self) -> (&'static str, &str) {
        (Self::PREFIX_SETTING, &self.prefix)
    }

    /// Fills the `{owner}`, `{gateway}`, `{clinician}`, `{coordinator}`, `{auditor}` and
    /// `{…_writer}` placeholders of a migration's SQL.
    pub(crate) fn render(&self, sql: &str) -> String {
        sql.replace("{clinician_writer}", &self.clinician_writer())
            .replace("{coordinator_writer}", &self.coordinator_writer())
            .replace("{auditor_writer}", &self.auditor_writer())
            .replace("{owner}", &self.owner())
            .replace("{gateway}", &self.gateway())
            .replace("{clinician}", &self.clinician())
            .replace("{coordinator}", &self.coordinator())
            .replace("{auditor}", &self.auditor())
    }
}

impl Default for RoleNames {
    fn default() -> Self {
        Self {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_lower_case_identifiers() {
        let roles = RoleNames::new("clinic_a2").expect("valid prefix");
        assert_eq!(roles.gateway(), "clinic_a2_gateway");
    }

    #[test]
    fn rejects_anything_that_would_need_quoting() {
        for bad in [
            "",
            "2fast",
            "Rowguard",
            "a-b",
            "a;drop role x",
            "a b",
            &"x".repeat(41),
        ] {
            assert!(RoleNames::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn render_fills_every_placeholder() {
        let sql = RoleNames::new("p")
            .expect("valid prefix")
            .render("{owner} {gateway} {clinician} {coordinator} {auditor}");
        assert_eq!(sql, "p_owner p_gateway p_clinician p_coordinator p_auditor");
    }
}
