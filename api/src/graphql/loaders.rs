//! Per-request DataLoaders: every patient on a page shares one statement per field, so a page
//! of 100 patients with care teams costs the same number of statements as a page of 1.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use sea_orm::ConnectionTrait;
use tracing::Instrument;
use uuid::Uuid;

use super::connection::PageArgs;
use super::context::RequestDb;
use super::inputs::SearchPattern;
use super::rows::{self, CareTeamRow, PatientRow};
use crate::audit::record::{AuditAction, AuditOutcome};
use crate::db::DbError;
use crate::error::ApiError;

/// The request's care-team loader (what resolvers look up in the context).
pub type CareTeams = DataLoader<CareTeamLoader, HashMapCache>;
/// The request's clinical-notes loader.
pub type ClinicalNotes = DataLoader<ClinicalNotesLoader, HashMapCache>;
/// The request's clinician-page loader.
pub type ClinicianPages = DataLoader<ClinicianPagesLoader, HashMapCache>;

/// The loaders of one request, each cached for the request so a page's prefetch serves every
/// field that follows.
pub fn for_request(db: &Arc<RequestDb>) -> (CareTeams, ClinicalNotes, ClinicianPages) {
    (
        DataLoader::with_cache(
            CareTeamLoader(db.clone()),
            spawn_traced,
            HashMapCache::default(),
        ),
        DataLoader::with_cache(
            ClinicalNotesLoader(db.clone()),
            spawn_traced,
            HashMapCache::default(),
        ),
        DataLoader::with_cache(
            ClinicianPagesLoader(db.clone()),
            spawn_traced,
            HashMapCache::default(),
        ),
    )
}

/// Forgets what the request's loaders have loaded. A mutation field has just written: the next
/// field of the same request (mutation fields run one after another) must be answered from the
/// database, not from before the write (an `updatePatient` after another answered the first
/// one's notes with the second's version, and an unassignment listed the clinician it removed).
pub fn forget_loaded(ctx: &async_graphql::Context<'_>) {
    if let Ok(loader) = ctx.data::<CareTeams>() {
        loader.clear::<Uuid>();
    }
    if let Ok(loader) = ctx.data::<ClinicalNotes>() {
        loader.clear::<Uuid>();
    }
    if let Ok(loader) = ctx.data::<ClinicianPages>() {
        loader.clear::<ClinicianPageKey>();
    }
}

/// Runs a batch load on its own task, inside the span that asked for it (so its statements
/// belong to the request's trace).
fn spawn_traced<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let parent = crate::telemetry::spans::parent();
    tokio::spawn(
        crate::telemetry::spans::within(parent, future).instrument(tracing::Span::current()),
    )
}

/// Loads care teams by patient id.
pub struct CareTeamLoader(Arc<RequestDb>);

impl Loader<Uuid> for CareTeamLoader {
    type Value = Vec<CareTeamRow>;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        self.0.record(
            AuditAction::Read,
            AuditOutcome::Success,
            keys.iter().copied(),
        );
        let conn = self.0.conn().await?;
        Ok(rows::care_teams(&conn, keys).await?)
    }
}

/// Loads clinical notes by patient id, inside a savepoint: for roles without the column grant
/// PostgreSQL refuses the statement, which must not abort the rest of the request. (Plain
/// `SAVEPOINT` statements rather than a nested transaction object, so they are counted against
/// the request's statement budget like every other.)
pub struct ClinicalNotesLoader(Arc<RequestDb>);

impl Loader<Uuid> for ClinicalNotesLoader {
    type Value = String;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let conn = self.0.conn().await?;
        conn.execute_unprepared("SAVEPOINT clinical_notes")
            .await
            .map_err(DbError::from)?;
        match rows::clinical_notes(&conn, keys).await {
            Ok(rows) => {
                conn.execute_unprepared("RELEASE SAVEPOINT clinical_notes")
                    .await
                    .map_err(DbError::from)?;
                // The notes are charged as they are answered (the `clinicalNotes` resolver), each
                // time: the loader's cache answers every alias of the field from one load.
                self.0.record(
                    AuditAction::Read,
                    AuditOutcome::Success,
                    rows.iter().map(|(id, _)| *id),
                );
                Ok(rows.into_iter().collect())
            }
            Err(e) => {
                conn.execute_unprepared("ROLLBACK TO SAVEPOINT clinical_notes")
                    .await
                    .map_err(DbError::from)?;
                let err = DbError::from(e);
                if err.is_permission_denied() {
                    self.0.record(
                        AuditAction::Read,
                        AuditOutcome::Denied,
                        keys.iter().copied(),
                    );
                    Err(ApiError::forbidden(
                        "clinical notes are available to clinicians only",
                    ))
                } else {
                    Err(err.into())
                }
            }
        }
    }
}

/// One page of a clinician's patients: the page arguments and the search.
pub type ClinicianPageKey = (i32, PageArgs<Uuid>, Option<SearchPattern>);

/// Loads one page each for many clinicians in ONE statement per distinct page request, so
/// nesting `patients` under a list of clinicians costs a statement, not one per clinician.
pub struct ClinicianPagesLoader(Arc<RequestDb>);

impl Loader<ClinicianPageKey> for ClinicianPagesLoader {
    type Value = Vec<PatientRow>;
    type Error = ApiError;

    async fn load(
        &self,
        keys: &[ClinicianPageKey],
    ) -> Result<HashMap<ClinicianPageKey, Self::Value>, Self::Error> {
        let mut by_page: HashMap<(PageArgs<Uuid>, Option<SearchPattern>), Vec<i32>> =
            HashMap::new();
        for (clinician, page, search) in keys {
            by_page
                .entry((*page, search.clone()))
                .or_default()
                .push(*clinician);
        }
        let mut pages = HashMap::new();
        for ((page, search), clinicians) in by_page {
            let rows = {
                let conn = self.0.conn().await?;
                rows::patients_of_clinicians(&conn, &clinicians, &page, search.as_ref()).await?
            };
            for (clinician, list) in rows {
                pages.insert((clinician, page, search.clone()), list);
            }
        }
        Ok(pages)
    }
}
