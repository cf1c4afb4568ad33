use sea_orm::{DbErr, RuntimeErr};

/// A database failure. Its `Display` is deliberately generic: PostgreSQL's messages can quote row
/// values (a unique violation names the duplicate key), so detail goes to the server log via
/// [`DbError::sqlstate`] and `Debug`, never to a caller.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had (pool timeout, database down).
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    /// A statement failed.
    #[error("a database statement failed")]
    Statement(#[source] DbErr),
}

impl DbError {
    /// The SQLSTATE code PostgreSQL reported, if the failure came from the server.
    pub fn sqlstate(&self) -> Option<String> {
        let err = match self {
            DbError::Unavailable(e) | DbError::Statement(e) => e,
        };
        match err {
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// Why no connection could be had (refused, timed out, certificate not verified...), for
    /// operators: connection failures carry no row data, unlike statement errors.
    pub fn connection_failure(&self) -> Option<String> {
        match self {
            DbError::Unavailable(e) => Some(e.to_string()),
            DbError::Statement(_) => None,
        }
    }

    /// True when PostgreSQL refused for lack of privilege, e.g. a coordinator selecting clinical
    /// notes.
    pub fn is_permission_denied(&self) -> bool {
        self.kind() == FailureKind::PermissionDenied
    }

    /// What kind of failure this is, by SQLSTATE: the one place codes are read.
    pub fn kind(&self) -> FailureKind {
        if matches!(self, DbError::Unavailable(_)) {
            return FailureKind::Lost;
        }
        if matches!(self, DbError::Statement(DbErr::Custom(why)) if why == NOT_SENT) {
            return FailureKind::NotSent;
        }
        let Some(code) = self.sqlstate() else {
            return FailureKind::Other;
        };
        match code.as_str() {
            "42501" => FailureKind::PermissionDenied,
            "23505" => FailureKind::AlreadyExists,
            "23503" => FailureKind::MissingReference,
            // 22021: a character the encoding cannot hold (NUL); 22003: a number out of range.
            "23514" | "22001" | "22P02" | "22007" | "22008" | "22021" | "22003" => {
                FailureKind::InvalidValue
            }
            // statement_timeout, a backend an administrator terminated, an idle transaction ended.
            "57014" | "57P01" | "25P03" => FailureKind::Cancelled,
            "40001" | "40P01" => FailureKind::Conflict,
            // Connection exceptions; the server restarting after another backend crashed
            // (57P02), or not yet accepting connections (57P03).
            code if code.starts_with("08") => FailureKind::Lost,
            "57P02" | "57P03" => FailureKind::Lost,
            _ => FailureKind::Other,
        }
    }
}

/// The error a request's own limits raise in place of a statement they refused to send (the
/// request is stopped; its reason is kept on the request, not in this error).
pub const NOT_SENT: &str = "statement not sent: the request was stopped";

/// Failures the gateway tells apart (see [`DbError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 42501: not granted to the caller's role.
    PermissionDenied,
    /// 23505: a unique constraint.
    AlreadyExists,
    /// 23503: a foreign key points nowhere.
    MissingReference,
    /// A check constraint, or a value the column refuses.
    InvalidValue,
    /// Cancelled by a timeout or an administrator: the caller may retry.
    Cancelled,
    /// A serialization failure or deadlock: the caller may retry.
    Conflict,
    /// No connection, or it was lost.
    Lost,
    /// Never sent: the request had been stopped by one of its own limits ([`NOT_SENT`]).
    NotSent,
    Other,
}

impl From<DbErr> for DbError {
    fn from(err: DbErr) -> Self {
        let connection_lost = match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                use sea_orm::sqlx::Error as E;
                matches!(
                    e.as_ref(),
                    E::Io(_)
                        | E::Tls(_)
                        | E::Protocol(_)
                        | E::PoolTimedOut
                        | E::PoolClosed
                        | E::WorkerCrashed
                )
            }
            _ => false,
        };
        if connection_lost {
            DbError::Unavailable(err)
        } else {
            DbError::Statement(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_the_request_refused_to_send_is_told_apart_from_a_database_failure() {
        let not_sent = DbError::Statement(DbErr::Custom(NOT_SENT.to_owned()));
        assert_eq!(not_sent.kind(), FailureKind::NotSent);
        let other = DbError::Statement(DbErr::Custom("something else".to_owned()));
        assert_eq!(other.kind(), FailureKind::Other);
    }
}
