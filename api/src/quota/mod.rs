//! Per-person limits: how many requests one person may have in flight at once (a stolen or
//! runaway credential must not be able to take every database connection), and how much they
//! (and their OAuth client) may ask for over time.

mod concurrency;
mod rate;
mod shared;

pub use concurrency::{ConcurrencyLimiter, InFlight};
pub use rate::{Budget, Decision, QuotaCounters, QuotaMode, Quotas, Subject, forget_idle};
pub use shared::SharedQuota;
