//! `rowguard audit verify`: walks the audit trail's hash chain and reports the first record
//! that was altered, deleted, inserted out of band or reordered.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use sha2::{Digest, Sha256};

/// What the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event is sealed and every link holds.
    Intact { events: u64 },
    /// The first problem, in chain order.
    Broken {
        seq: Option<i64>,
        event_id: i64,
        problem: String,
    },
}

const PAGE: i64 = 5000;

/// Verifies the chain. `conn` must be able to read `rowguard_audit` (the owner or an auditor).
pub async fn verify(conn: &DatabaseConnection) -> Result<Verdict, DbErr> {
    let mut previous: Vec<u8> = vec![0];
    let mut after_seq = 0_i64;
    let mut events = 0_u64;
    loop {
        let rows = conn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "select c.seq, c.event_id, c.prev_hash, c.hash, \
                        (select rowguard_audit.canonical(e) from rowguard_audit.events e where e.id = c.event_id) as canonical \
                 from rowguard_audit.chain c where c.seq > $1 order by c.seq limit $2",
                [after_seq.into(), PAGE.into()],
            ))
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let seq: i64 = row.try_get("", "seq")?;
            let event_id: i64 = row.try_get("", "event_id")?;
            let prev_hash: Vec<u8> = row.try_get("", "prev_hash")?;
            let hash: Vec<u8> = row.try_get("", "hash")?;
            let canonical: Option<String> = row.try_get("", "canonical")?;
            let broken = |problem: &str| Verdict::Broken {
                seq: Some(seq),
                event_id,
                problem: problem.to_owned(),
            };
            let Some(canonical) = canonical else {
                return Ok(broken("the event was deleted"));
            };
            if prev_hash != previous {
                return Ok(broken(
                    "the chain link does not match the previous record (records deleted or reordered)",
                ));
            }
            let mut hasher = Sha256::new();
            hasher.update(&prev_hash);
            hasher.update(canonical.as_bytes());
            let computed: [u8; 32] = hasher.finalize().into();
            if computed[..] != hash[..] {
                return Ok(broken("the event's content was altered"));
            }
            previous = hash;
            after_seq = seq;
            events += 1;
        }
    }
    // Every committed event is sealed at commit; one without a link was written around the
    // append path (e.g. with triggers disabled).
    let unsealed = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select min(e.id) as id from rowguard_audit.events e \
             where not exists (select 1 from rowguard_audit.chain c where c.event_id = e.id)",
        ))
        .await?
        .and_then(|row| row.try_get::<Option<i64>>("", "id").ok().flatten());
    if let Some(event_id) = unsealed {
        return Ok(Verdict::Broken {
            seq: None,
            event_id,
            problem: "the event is not in the chain (written around the append path)".into(),
        });
    }
    Ok(Verdict::Intact { events })
}
