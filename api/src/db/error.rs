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

    /// True when PostgreSQL refused for lack of privilege (SQLSTATE 42501), e.g. a coordinator
    /// selecting clinical notes.
    pub fn is_permission_denied(&self) -> bool {
        self.sqlstate().as_deref() == Some("42501")
    }
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
