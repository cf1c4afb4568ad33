//! Request quotas: each person (issuer and subject) and each OAuth client has a budget of cost
//! units (the same cost the query limits measure) with a burst and a sustained rate, enforced
//! by GCRA. Locally per replica with `governor`; shared by every replica through Redis when
//! `ROWGUARD_QUOTA_REDIS_URL` is set (see [`super::shared`]).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};

use super::shared::SharedQuota;
use crate::metrics::ReasonLabel;
use crate::principal::Principal;
pub use crate::settings::QuotaMode;
use crate::settings::QuotaSettings;

/// A budget: `burst` units at once, refilled at `rate` units per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub rate: u32,
    pub burst: u32,
}

impl Budget {
    /// A person's budget as configured.
    pub fn person(settings: &QuotaSettings) -> Self {
        Self {
            rate: settings.rate,
            burst: settings.burst,
        }
    }

    /// An OAuth client's budget as configured (a rate of 0: none).
    pub fn client(settings: &QuotaSettings) -> Self {
        Self {
            rate: settings.client_rate,
            burst: settings.client_burst,
        }
    }

    /// Microseconds to earn one unit.
    fn interval_us(self) -> u64 {
        1_000_000 / u64::from(self.rate.max(1))
    }

    /// Seconds from empty to full.
    pub fn window_secs(self) -> u64 {
        (u64::from(self.burst) * self.interval_us())
            .div_ceil(1_000_000)
            .max(1)
    }
}

/// Which budget a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Person,
    Client,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Person => "person",
            Subject::Client => "client",
        }
    }
}

/// The outcome of charging one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The budget that decided (the one that refused, or the person's when both allowed).
    pub subject: Subject,
    pub budget: Budget,
    /// Units left after this request.
    pub remaining: u64,
    /// Until the request could be allowed (zero when it was).
    pub retry_after: Duration,
    /// Until the budget is full again.
    pub reset: Duration,
}

impl Decision {
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): the budget, in units per window.
    pub fn policy_header(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.subject.as_str(),
            self.budget.burst,
            self.budget.window_secs()
        )
    }

    /// `RateLimit`: units remaining and seconds until the budget is full again.
    pub fn state_header(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.subject.as_str(),
            self.remaining,
            self.reset.as_secs_f64().ceil() as u64
        )
    }

    /// `Retry-After`, in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        (self.retry_after.as_secs_f64().ceil() as u64).max(1)
    }
}

/// Counters of the quota check.
#[derive(Debug, Clone, Default)]
pub struct QuotaCounters {
    /// Requests over a budget, by `<subject>_<mode>` (e.g. `person_enforce`: refused).
    pub exceeded: Family<ReasonLabel, Counter>,
    /// 1 while budgets are shared through Redis; 0 while this replica limits locally.
    pub shared: Gauge,
    /// Redis calls that failed or timed out (each fell back to the local budget).
    pub redis_errors: Counter,
}

type LocalLimiter = RateLimiter<
    [u8; 32],
    DefaultKeyedStateStore<[u8; 32]>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One kind of budget (per person, or per client), local and possibly shared.
struct Limit {
    subject: Subject,
    budget: Budget,
    local: LocalLimiter,
}

impl Limit {
    fn new(subject: Subject, budget: Budget) -> Option<Self> {
        let rate = NonZeroU32::new(budget.rate)?;
        let burst = NonZeroU32::new(budget.burst)?;
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Self {
            subject,
            budget,
            local: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        })
    }

    fn check_local(&self, key: &[u8; 32], cost: u32) -> Decision {
        let n = NonZeroU32::new(cost.clamp(1, self.budget.burst)).unwrap_or(NonZeroU32::MIN);
        let interval = Duration::from_micros(self.budget.interval_us());
        match self.local.check_key_n(key, n) {
            Ok(Ok(snapshot)) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                Decision {
                    allowed: true,
                    subject: self.subject,
                    budget: self.budget,
                    remaining,
                    retry_after: Duration::ZERO,
                    reset: interval
                        * u32::try_from(u64::from(self.budget.burst) - remaining)
                            .unwrap_or(u32::MAX),
                }
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    subject: self.subject,
                    budget: self.budget,
                    remaining: 0,
                    retry_after: wait,
                    reset: wait + interval * (self.budget.burst - n.get()),
                }
            }
            // The cost is clamped to the burst, so this cannot happen.
            Err(_) => Decision {
                allowed: false,
                subject: self.subject,
                budget: self.budget,
                remaining: 0,
                retry_after: Duration::from_secs(self.budget.window_secs()),
                reset: Duration::from_secs(self.budget.window_secs()),
            },
        }
    }
}

/// Every replica-wide quota.
pub struct Quotas {
    mode: QuotaMode,
    person: Option<Limit>,
    client: Option<Limit>,
    shared: Option<SharedQuota>,
    counters: QuotaCounters,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("mode", &self.mode)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl Quotas {
    pub fn new(
        mode: QuotaMode,
        person: Budget,
        client: Budget,
        shared: Option<SharedQuota>,
        counters: QuotaCounters,
    ) -> Self {
        Self {
            mode,
            person: Limit::new(Subject::Person, person),
            client: Limit::new(Subject::Client, client),
            shared,
            counters,
        }
    }

    /// No quotas.
    pub fn off() -> Self {
        Self::new(
            QuotaMode::Off,
            Budget { rate: 0, burst: 0 },
            Budget { rate: 0, burst: 0 },
            None,
            QuotaCounters::default(),
        )
    }

    pub fn mode(&self) -> QuotaMode {
        self.mode
    }

    /// Whether budgets are shared across replicas right now (`None`: not configured to be).
    pub fn sharing(&self) -> Option<bool> {
        self.shared.as_ref().map(SharedQuota::healthy)
    }

    /// Charges one request of `cost` units to the caller's budgets. `None` when quotas are off.
    /// In `measure` mode the decision is reported but the request always proceeds.
    pub async fn charge(&self, principal: &Principal, cost: u64) -> Option<Decision> {
        if self.mode == QuotaMode::Off {
            return None;
        }
        let cost = u32::try_from(cost).unwrap_or(u32::MAX).max(1);
        let mut decision = None;
        if let Some(limit) = &self.person {
            let key = key_of(&[principal.issuer.as_bytes(), principal.subject.as_bytes()]);
            let person = self.check(limit, &key, cost).await;
            if !person.allowed {
                return Some(self.exceeded(person));
            }
            decision = Some(person);
        }
        if let (Some(limit), Some(client)) = (&self.client, &principal.client_id) {
            let key = key_of(&[principal.issuer.as_bytes(), client.as_bytes()]);
            let by_client = self.check(limit, &key, cost).await;
            if !by_client.allowed {
                return Some(self.exceeded(by_client));
            }
            decision = decision.or(Some(by_client));
        }
        decision
    }

    async fn check(&self, limit: &Limit, key: &[u8; 32], cost: u32) -> Decision {
        if let Some(shared) = &self.shared {
            match shared.charge(limit.subject, key, limit.budget, cost).await {
                Some(decision) => {
                    self.counters.shared.set(1);
                    // The local budget is kept in step on the side (its verdict unused): one
                    // Redis timeout is enough to fall back to it, and a budget left full while
                    // Redis answered would hand the person a fresh burst on this replica.
                    if decision.allowed {
                        let _ = limit.check_local(key, cost);
                    }
                    return decision;
                }
                None => {
                    self.counters.shared.set(0);
                    self.counters.redis_errors.inc();
                }
            }
        }
        limit.check_local(key, cost)
    }

    fn exceeded(&self, decision: Decision) -> Decision {
        let mode = match self.mode {
            QuotaMode::Enforce => "enforce",
            _ => "measure",
        };
        self.counters
            .exceeded
            .get_or_create(&ReasonLabel {
                reason: format!("{}_{mode}", decision.subject.as_str()),
            })
            .inc();
        tracing::info!(
            quota = decision.subject.as_str(),
            mode,
            retry_after_secs = decision.retry_after_secs(),
            "request over its quota"
        );
        if self.mode == QuotaMode::Enforce {
            decision
        } else {
            Decision {
                allowed: true,
                ..decision
            }
        }
    }

    /// Forgets local budgets that are full again (call now and then; memory stays bounded by
    /// the people active within one window).
    pub fn forget_idle(&self) {
        for limit in [&self.person, &self.client].into_iter().flatten() {
            limit.local.retain_recent();
            limit.local.shrink_to_fit();
        }
    }
}

/// A budget's key: a digest, so subjects (sometimes e-mail addresses) are not held in memory or
/// Redis in the clear.
fn key_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Keeps local budgets small.
pub async fn forget_idle(quotas: Arc<Quotas>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        quotas.forget_idle();
    }
}
