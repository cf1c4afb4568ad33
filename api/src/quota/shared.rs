//! Budgets shared by every replica through Redis: one GCRA state per budget key, updated by a
//! Lua script so that each check is one atomic round trip, timed by Redis's own clock (replica
//! clocks may differ). When Redis does not answer within the timeout
//! (`ROWGUARD_QUOTA_REDIS_TIMEOUT_MS`), the caller falls back to its local budget, and Redis is not asked again for [`BACKOFF`]: a Redis outage slows no
//! request by more than one timeout per backoff period, and never stops the service.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::rate::{Budget, Decision, Subject};

/// How long after a failure requests use their local budget without asking Redis.
const BACKOFF: Duration = Duration::from_secs(1);

/// GCRA on a theoretical arrival time (TAT) kept in microseconds. Returns
/// `{allowed, retry_after_us, used_us}` where `used_us` is how far the TAT is ahead of now
/// (the part of the burst in use, in time).
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0, new_tat - now}
";

/// The Redis side of the quotas.
pub struct SharedQuota {
    connection: ConnectionManager,
    script: Script,
    /// Longest wait for Redis on the request path.
    timeout: Duration,
    /// Microseconds since `epoch` before which Redis is not asked (after a failure).
    paused_until: AtomicU64,
    epoch: Instant,
    healthy: AtomicBool,
    /// This deployment's part of Redis (see `ROWGUARD_QUOTA_REDIS_NAMESPACE`).
    namespace: String,
}

impl std::fmt::Debug for SharedQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedQuota")
            .field("healthy", &self.healthy())
            .finish_non_exhaustive()
    }
}

impl SharedQuota {
    /// Prepares the connection; nothing is sent until the first request, so Rowguard starts
    /// (on local budgets) even while Redis is down.
    pub fn new(url: &str, timeout: Duration, namespace: &str) -> Result<Self, String> {
        let client = Client::open(url).map_err(|e| format!("ROWGUARD_QUOTA_REDIS_URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("ROWGUARD_QUOTA_REDIS_URL: {e}"))?;
        Ok(Self {
            connection,
            script: Script::new(GCRA),
            namespace: namespace.to_owned(),
            timeout,
            paused_until: AtomicU64::new(0),
            epoch: Instant::now(),
            healthy: AtomicBool::new(true),
        })
    }

    /// Whether the last call to Redis succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Charges `cost` units to the shared budget `key`; `None` when Redis could not decide
    /// (then the caller uses its local budget).
    pub async fn charge(
        &self,
        subject: Subject,
        key: &[u8; 32],
        budget: Budget,
        cost: u32,
    ) -> Option<Decision> {
        if self.now_us() < self.paused_until.load(Ordering::Relaxed) {
            return None;
        }
        // At least a microsecond: above a million units a second the division gave 0, and a
        // zero interval allowed everything.
        let interval = (1_000_000 / u64::from(budget.rate.max(1))).max(1);
        let tolerance = interval * u64::from(budget.burst);
        let cost = cost.clamp(1, budget.burst.max(1));
        let mut connection = self.connection.clone();
        let mut invocation = self
            .script
            .key(redis_key(&self.namespace, subject, key, budget));
        invocation.arg(interval).arg(tolerance).arg(cost);
        let reply = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64, i64)>(&mut connection),
        )
        .await;
        match reply {
            Ok(Ok((allowed, retry_after_us, used_us))) => {
                self.healthy.store(true, Ordering::Relaxed);
                let used = u64::try_from(used_us).unwrap_or(0);
                let remaining = tolerance.saturating_sub(used) / interval.max(1);
                Some(Decision {
                    allowed: allowed == 1,
                    subject,
                    budget,
                    remaining: if allowed == 1 { remaining } else { 0 },
                    retry_after: Duration::from_micros(u64::try_from(retry_after_us).unwrap_or(0)),
                    reset: Duration::from_micros(used),
                })
            }
            Ok(Err(error)) => {
                self.fail(&error.to_string());
                None
            }
            Err(_) => {
                self.fail("timed out");
                None
            }
        }
    }

    fn fail(&self, why: &str) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                "Redis is not answering: quotas are enforced per replica until it is back"
            );
        }
        let until = self.now_us() + u64::try_from(BACKOFF.as_micros()).unwrap_or(u64::MAX);
        self.paused_until.store(until, Ordering::Relaxed);
    }
}

/// A budget's key: the deployment's namespace, and the budget's rate and burst, which the stored
/// state is read through (two deployments sharing one Redis spent each other's budgets, each
/// reading the other's state through its own rate).
fn redis_key(namespace: &str, subject: Subject, key: &[u8; 32], budget: Budget) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "rowguard:{namespace}:quota:{}:{}/s:{}:{hex}",
        subject.as_str(),
        budget.rate,
        budget.burst
    )
}
