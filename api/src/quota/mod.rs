//! Per-person limits: how many requests one person may have in flight at once. A stolen or
//! runaway credential must not be able to take every database connection.

mod concurrency;

pub use concurrency::{ConcurrencyLimiter, InFlight};
