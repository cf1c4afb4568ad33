//! A ward's mixed traffic over HTTP — reads and updates from many clinicians plus a stranger, in a
//! random but reproducible order — with every answer checked against who may see what.
//!
//! Shared by the pooler spec and the soak, so both check isolation the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::StreamExt;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{admit_many, assign, enroll_at};
use crate::issuer::TestIssuer;

/// A small deterministic generator: the interleaving is random but reproducible.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Who may see which patient: the truth every answer is checked against.
#[derive(Debug)]
pub struct Ward {
    pub patients: Vec<Uuid>,
    /// One entry per caller: their bearer token and the MRNs they may see. The last caller is a
    /// stranger (valid token, not enrolled) who may see nothing.
    callers: Vec<(String, BTreeSet<Uuid>)>,
    mrn_of: BTreeMap<Uuid, String>,
}

impl Ward {
    /// Admits `patients` patients and enrolls `clinicians` clinicians at `issuer`, each assigned
    /// 3–7 random patients (lists overlap, so care teams share patients and race on updates).
    pub async fn admit(
        owner: &DatabaseConnection,
        issuer: &TestIssuer,
        clinicians: usize,
        patients: usize,
        token_lifetime_secs: i64,
    ) -> Ward {
        let ids = admit_many(owner, "W", patients).await;
        let mut rng = XorShift(0x0ddb_a11c_e5ee_d001);
        let mut callers = Vec::with_capacity(clinicians + 1);
        for c in 0..clinicians {
            let subject = format!("ward-clinician-{c}");
            let person = enroll_at(owner, issuer.url(), &subject).await;
            let mut mine = BTreeSet::new();
            for _ in 0..(3 + c % 5) {
                mine.insert(ids[rng.below(ids.len())]);
            }
            for p in &mine {
                assign(owner, &person, *p).await;
            }
            let token = issuer.token(&subject).times(0, token_lifetime_secs).mint();
            callers.push((token, mine));
        }
        let stranger = issuer
            .token("ward-stranger")
            .times(0, token_lifetime_secs)
            .mint();
        callers.push((stranger, BTreeSet::new()));
        let mrn_of = ids
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, format!("W-{i}")))
            .collect();
        Ward {
            patients: ids,
            callers,
            mrn_of,
        }
    }

    /// Callers, the stranger included.
    pub fn callers(&self) -> usize {
        self.callers.len()
    }

    /// An endless random plan of steps, starting from `seed`.
    pub fn plan(&self, seed: u64) -> impl Iterator<Item = Step> + use<> {
        let mut rng = XorShift(seed);
        let position: BTreeMap<Uuid, usize> = self
            .patients
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i))
            .collect();
        // Half of the updates aim at the caller's own patients, half anywhere (mostly others').
        let own: Vec<Vec<usize>> = self
            .callers
            .iter()
            .map(|(_, mine)| mine.iter().map(|p| position[p]).collect())
            .collect();
        let patients = self.patients.len();
        std::iter::from_fn(move || {
            let caller = rng.below(own.len());
            let update = rng.below(4) == 0;
            let patient = match &own[caller] {
                mine if update && !mine.is_empty() && rng.below(2) == 0 => {
                    mine[rng.below(mine.len())]
                }
                _ => rng.below(patients),
            };
            Some(Step {
                caller,
                patient,
                update,
            })
        })
    }

    /// Runs `steps` against the GraphQL endpoint at `url`, `concurrency` at a time.
    pub async fn run(
        &self,
        http: &reqwest::Client,
        url: &str,
        steps: impl Iterator<Item = Step>,
        concurrency: usize,
    ) -> Tally {
        let started = Instant::now();
        let outcomes: Vec<Outcome> = futures::stream::iter(steps)
            .map(|step| self.check(http, url, step))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut tally = Tally {
            seconds: started.elapsed().as_secs_f64(),
            ..Tally::default()
        };
        for outcome in outcomes {
            tally.requests += outcome.requests;
            match outcome.result {
                Ok(Kind::Read) => tally.reads += 1,
                Ok(Kind::Update) => tally.updates += 1,
                Ok(Kind::Refused) => tally.refused += 1,
                Ok(Kind::Lost) => tally.lost_races += 1,
                Err(e) => tally.failures.push(e),
            }
        }
        tally
    }

    async fn check(&self, http: &reqwest::Client, url: &str, step: Step) -> Outcome {
        let (token, mine) = &self.callers[step.caller];
        let target = self.patients[step.patient];
        let post = |query: &'static str, variables: Value| async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            let status = response.status().as_u16();
            let body: Value = response
                .json()
                .await
                .map_err(|e| format!("HTTP {status}, body not JSON: {e}"))?;
            // Refusals (e.g. NOT_FOUND) carry 4xx statuses; their codes are checked below.
            if status >= 500 {
                return Err(format!("HTTP {status}: {body}"));
            }
            Ok::<Value, String>(body)
        };
        if !step.update {
            let result = post(
                "{ patients(first: 100) { edges { node { mrn } } } }",
                json!({}),
            )
            .await
            .and_then(|body| {
                let seen: Option<BTreeSet<String>> =
                    body["data"]["patients"]["edges"].as_array().map(|edges| {
                        edges
                            .iter()
                            .filter_map(|e| e["node"]["mrn"].as_str().map(str::to_owned))
                            .collect()
                    });
                let expected: BTreeSet<String> =
                    mine.iter().map(|p| self.mrn_of[p].clone()).collect();
                match seen {
                    Some(seen) if seen == expected && body.get("errors").is_none() => {
                        Ok(Kind::Read)
                    }
                    _ => Err(format!("read answered {body}, expected {expected:?}")),
                }
            });
            return Outcome {
                requests: 1,
                result,
            };
        }

        // Read the version this caller sees (null when not theirs), then update with it.
        let visible = mine.contains(&target);
        let result = async {
            let read = post(
                "query($id: ID!) { patient(id: $id) { version } }",
                json!({ "id": target }),
            )
            .await?;
            let version = read["data"]["patient"]["version"].as_i64();
            if version.is_some() != visible {
                return Err(format!("patient visible={visible} but read {read}"));
            }
            let written = post(
                "mutation($id: ID!, $v: Int!) { updatePatient(input: { id: $id, expectedVersion: $v, clinicalNotes: \"seen on the ward round\" }) { id version } }",
                json!({ "id": target, "v": version.unwrap_or(1) }),
            )
            .await?;
            let code = written["errors"][0]["extensions"]["code"].as_str();
            match (visible, code) {
                (true, None) if written["data"]["updatePatient"]["version"].as_i64() > version => {
                    Ok(Kind::Update)
                }
                // Another clinician on the care team updated it in between.
                (true, Some("CONFLICT")) => Ok(Kind::Lost),
                (false, Some("NOT_FOUND")) => Ok(Kind::Refused),
                _ => Err(format!("update (visible={visible}) answered {written}")),
            }
        }
        .await;
        Outcome {
            requests: 2,
            result,
        }
    }
}

/// One caller's action on one patient.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    caller: usize,
    patient: usize,
    update: bool,
}

enum Kind {
    Read,
    Update,
    Refused,
    Lost,
}

struct Outcome {
    requests: usize,
    result: Result<Kind, String>,
}

/// What a run did and every answer that was wrong.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: usize,
    /// Reads whose list was exactly the caller's patients.
    pub reads: usize,
    /// Updates of the caller's own patients that succeeded.
    pub updates: usize,
    /// Updates of other clinicians' patients, refused as NOT_FOUND.
    pub refused: usize,
    /// Updates that lost a race with a colleague (CONFLICT, as designed).
    pub lost_races: usize,
    pub failures: Vec<String>,
    pub seconds: f64,
}

impl Tally {
    pub fn summary(&self) -> String {
        format!(
            "{} requests in {:.1} s ({:.0} req/s): {} reads, {} updates, {} refused updates of others' patients, {} lost update races, {} failures",
            self.requests,
            self.seconds,
            self.requests as f64 / self.seconds.max(0.001),
            self.reads,
            self.updates,
            self.refused,
            self.lost_races,
            self.failures.len()
        )
    }
}
