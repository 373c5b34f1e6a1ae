//! `policy: redis`: counters in a Redis shared by every data plane, exact across them.
//!
//! One Lua script per request reads every configured period's window (and, for the sliding
//! window, the previous one), and increments them all only when every limit holds. Redis runs
//! a script atomically, so the check and the increment cannot interleave with another
//! gateway's: N concurrent requests from any number of data planes against a limit L admit
//! exactly L. (Kong reads, then increments later: #5311, #2629.)
//!
//! Keys are Kong's (`ratelimit:<route>:<service>:<identifier>:<window start ms>:<period>`);
//! each expires once no window can read it any more.
//!
//! Every call is bounded by `redis.timeout`, connecting included, so a dead or unreachable
//! Redis delays a request by at most that long. The connection is a reconnecting
//! [`ConnectionManager`], shared by the instances that follow this one across config swaps
//! while the connection settings stay the same.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use portico_common::plugins::rate_limiting::Redis as RedisConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Script};

use super::window::PRECISION;
use super::{Check, Counted};

/// At most one Redis error is logged per this many seconds per plugin instance: a dead Redis
/// under load would otherwise write one line per request.
pub const LOG_EVERY_SECS: u64 = 10;

/// KEYS: per period, its current window then its previous window.
/// ARGV[1]: "1" for the sliding window; then per period: limit, TTL (ms), previous weight.
/// Returns `{blocked, used...}`, each period's usage counting this request.
const SCRIPT: &str = r"
local n = #KEYS / 2
local sliding = ARGV[1] == '1'
local out = {0}
local blocked = false
for i = 1, n do
  local a = 2 + 3 * (i - 1)
  local used = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0') + 1
  if sliding then
    local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    used = used + math.floor(prev * tonumber(ARGV[a + 2]) / PRECISION)
  end
  if used > tonumber(ARGV[a]) then blocked = true end
  out[i + 1] = used
end
if blocked then
  out[1] = 1
else
  for i = 1, n do
    redis.call('INCR', KEYS[2 * i - 1])
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[2 + 3 * (i - 1) + 1])
  end
end
return out
";

static HIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&SCRIPT.replace("PRECISION", &PRECISION.to_string())));

/// What identifies a Redis connection: equal settings share one across config swaps.
#[derive(Clone, PartialEq, Eq)]
pub struct Params {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: i64,
    pub timeout: Duration,
}

impl Params {
    /// The settings of `config`; `None` without a host (the config check requires one).
    pub fn from_config(config: &RedisConfig) -> Option<Params> {
        Some(Params {
            host: config.host.clone()?,
            port: config.port,
            username: config.username.clone(),
            password: config.password.clone(),
            database: config.database,
            timeout: Duration::from_millis(u64::from(config.timeout)),
        })
    }
}

// The password never reaches a log line.
impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis call timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis connection setup: {0}")]
    Setup(String),
    #[error("redis answered an unexpected reply")]
    Reply,
}

/// One Redis connection and the counting script.
pub struct RedisStore {
    params: Params,
    /// Created on first use, inside the runtime (building a plugin may happen outside one).
    conn: OnceLock<Result<ConnectionManager, String>>,
    /// Unix seconds of the last logged error.
    last_log: AtomicU64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store connecting lazily with `params`.
    pub fn new(params: Params) -> RedisStore {
        RedisStore {
            params,
            conn: OnceLock::new(),
            last_log: AtomicU64::new(0),
        }
    }

    /// The connection settings.
    pub fn params(&self) -> &Params {
        &self.params
    }

    fn connection(&self) -> Result<ConnectionManager, String> {
        self.conn
            .get_or_init(|| {
                let p = &self.params;
                let mut redis = RedisConnectionInfo::default().set_db(p.database);
                if let Some(u) = &p.username {
                    redis = redis.set_username(u);
                }
                if let Some(pw) = &p.password {
                    redis = redis.set_password(pw);
                }
                let info = ConnectionAddr::Tcp(p.host.clone(), p.port)
                    .into_connection_info()
                    .map_err(|e| e.to_string())?
                    .set_redis_settings(redis);
                let client = Client::open(info).map_err(|e| e.to_string())?;
                // Reconnect quickly and give up within the timeout: the request waiting on
                // it is bounded by the timeout anyway, the next one triggers another attempt.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(p.timeout))
                    .set_response_timeout(Some(p.timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(200));
                ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())
            })
            .clone()
    }

    /// Counts one request under `base` (route:service:identifier) in every window of
    /// `checks`, atomically across data planes.
    pub async fn hit(
        &self,
        base: &str,
        checks: &[Check],
        sliding_window: bool,
    ) -> Result<Counted, RedisFailure> {
        let mut conn = self.connection().map_err(RedisFailure::Setup)?;
        let mut inv = HIT.prepare_invoke();
        inv.arg(if sliding_window { "1" } else { "0" });
        for c in checks {
            let name = c.period.name();
            inv.key(format!("ratelimit:{base}:{}:{name}", c.window.start_ms));
            inv.key(format!(
                "ratelimit:{base}:{}:{name}",
                c.window.prev_start_ms
            ));
            // The key must outlive its window, and with the sliding window the next one.
            let left = c.window.len_ms - c.window.elapsed_ms.min(c.window.len_ms);
            let ttl = left + if sliding_window { c.window.len_ms } else { 0 } + 1000;
            inv.arg(c.limit).arg(ttl).arg(c.window.prev_weight());
        }
        let timeout = self.params.timeout;
        let reply: Vec<i64> = tokio::time::timeout(timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| RedisFailure::Timeout(timeout))??;
        if reply.len() != checks.len() + 1 {
            return Err(RedisFailure::Reply);
        }
        let mut counted = Counted::default();
        for (c, used) in checks.iter().zip(&reply[1..]) {
            let used = u64::try_from(*used).map_err(|_| RedisFailure::Reply)?;
            counted.push(c.period, used, reply[0] == 1 && used > c.limit);
        }
        Ok(counted)
    }

    /// Logs `err` unless another error was logged in the last [`LOG_EVERY_SECS`].
    pub fn log_failure(&self, err: &RedisFailure, now_s: u64, fault_tolerant: bool) {
        let last = self.last_log.load(Ordering::Relaxed);
        if now_s < last + LOG_EVERY_SECS && last != 0 {
            return;
        }
        if self
            .last_log
            .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        tracing::error!(
            plugin = "rate-limiting",
            redis_host = %self.params.host,
            redis_port = self.params.port,
            fault_tolerant,
            error = %err,
            "rate-limiting could not count in redis (further errors silenced for {LOG_EVERY_SECS} s)"
        );
    }
}
