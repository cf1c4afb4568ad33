//! No identity leaks between concurrent requests that share a small pool.

use std::collections::{BTreeMap, BTreeSet};

use rowguard::db::AccessMode;
use rowguard::principal::{AppRole, Principal};
use rowguard_tests::TestDb;
use rowguard_tests::fixtures::{admit_many, assign, enroll, stranger};
use uuid::Uuid;

use crate::support::{scope, visible_patients};

const CLINICIANS: usize = 12;
const REQUESTS: usize = 600;

/// A small deterministic generator: the interleaving is random but reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_over_two_connections_each_see_only_their_own_patients() {
    let t = TestDb::new().await;
    let owner = t.owner().await;
    let patients = admit_many(&owner, "P", 40).await;
    let mut rng = XorShift(0x5eed_1234_abcd_0042);

    // Each clinician gets a different, partly overlapping list; one stranger expects nothing.
    let mut expected: Vec<(Principal, BTreeSet<Uuid>)> = Vec::new();
    for c in 0..CLINICIANS {
        let person = enroll(&owner, &format!("clinician-{c}")).await;
        let mut mine = BTreeSet::new();
        for _ in 0..=c {
            mine.insert(patients[rng.below(patients.len())]);
        }
        for p in &mine {
            assign(&owner, &person, *p).await;
        }
        expected.push((person.clinician(), mine));
    }
    expected.push((stranger(AppRole::Clinician), BTreeSet::new()));
    let distinct: BTreeMap<_, _> = expected.iter().map(|(_, s)| (s.clone(), ())).collect();
    assert!(
        distinct.len() >= 10,
        "the fixture should give most clinicians distinct lists"
    );

    let db = t.gateway(2).await;
    let mut handles = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let (principal, mine) = expected[rng.below(expected.len())].clone();
        let db = db.clone();
        let pause = rng.below(3);
        handles.push(tokio::spawn(async move {
            let mode = if i % 2 == 0 {
                AccessMode::ReadOnly
            } else {
                AccessMode::ReadWrite
            };
            let s = scope(&db, &principal, mode).await;
            for _ in 0..pause {
                tokio::task::yield_now().await;
            }
            let seen = visible_patients(&s).await;
            // End requests in every way a real one can end.
            match i % 3 {
                0 => s.commit().await.expect("commit"),
                1 => s.rollback().await.expect("rollback"),
                _ => drop(s),
            }
            (seen == mine, principal.subject)
        }));
    }

    let mut checked = 0;
    let mut leaks = Vec::new();
    for handle in handles {
        let (ok, subject) = handle.await.expect("request task");
        checked += 1;
        if !ok {
            leaks.push(subject);
        }
    }
    eprintln!(
        "isolation: checked {checked} concurrent requests from {} identities over 2 connections",
        expected.len()
    );
    assert_eq!(checked, REQUESTS);
    assert!(
        leaks.is_empty(),
        "{} requests saw rows that were not theirs: {leaks:?}",
        leaks.len()
    );
}
