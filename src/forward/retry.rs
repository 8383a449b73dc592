//! When to try a destination again: exponential backoff with jitter, server hints (gRPC `RetryInfo`,
//! HTTP `Retry-After`) and a circuit breaker that stops hammering a dead destination and probes it.

use crate::model::rpc::{ProtoAny, RpcStatus};
use prost::Message;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Tunables for retrying one destination.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First wait after a failure; doubles with each further failure.
    pub initial: Duration,
    /// Longest wait between retries while the circuit is closed.
    pub max: Duration,
    /// Consecutive failures after which the circuit opens.
    pub open_after: u32,
    /// While open: how often one probe request is let through.
    pub probe_every: Duration,
    /// Longest server-requested wait that is honored as given (longer hints are cut to this).
    pub max_hint: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            open_after: 5,
            probe_every: Duration::from_secs(30),
            max_hint: Duration::from_secs(300),
        }
    }
}

/// What a pipeline reports about its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Ok,
    Retrying,
    CircuitOpen,
}

/// Consecutive-failure counter with the backoff and circuit state that follow from it.
#[derive(Debug)]
pub struct Breaker {
    policy: RetryPolicy,
    failures: u32,
    rng: u64,
}

impl Breaker {
    pub fn new(policy: RetryPolicy, seed: u64) -> Breaker {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Breaker {
            policy,
            failures: 0,
            rng: (nanos ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.failures {
            0 => BreakerState::Ok,
            n if n < self.policy.open_after => BreakerState::Retrying,
            _ => BreakerState::CircuitOpen,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn success(&mut self) {
        self.failures = 0;
    }

    /// Records a failure and says how long to wait before the next attempt. A server hint wins over our
    /// own schedule (the server knows when it will have room); otherwise exponential backoff with "equal
    /// jitter" (half fixed, half random) so many aotels do not retry in lockstep, and once the circuit is
    /// open, one probe per `probe_every`.
    pub fn failure(&mut self, hint: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if let Some(hint) = hint {
            return hint.min(self.policy.max_hint);
        }
        let base = if self.state() == BreakerState::CircuitOpen {
            self.policy.probe_every
        } else {
            let exp = self.failures.saturating_sub(1).min(20);
            self.policy
                .initial
                .saturating_mul(1 << exp)
                .min(self.policy.max)
        };
        let half = base / 2;
        half + half.mul_f64(self.random_unit())
    }

    /// xorshift64*: jitter needs spread, not secrecy.
    fn random_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`, to Unix seconds.
fn parse_http_date(s: &str) -> Option<u64> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u32 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" {
        return None;
    }
    let text = format!("{year:04}-{month:02}-{day:02}T{time}Z");
    crate::model::time::parse_rfc3339(&text).map(|ns| ns / 1_000_000_000)
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The delay of a `google.rpc.RetryInfo` among the details of a gRPC status, if there is one.
pub fn grpc_retry_delay(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    let info = status
        .details
        .iter()
        .find(|d| d.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?.min(999_999_999);
    Some(Duration::new(secs, nanos))
}

/// Encodes status details carrying a `RetryInfo`: what a server sends to ask for a pause (tests use it).
pub fn grpc_retry_details(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    RpcStatus {
        code,
        message: message.to_string(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE.to_string(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            open_after: 4,
            probe_every: Duration::from_secs(10),
            max_hint: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_then_the_circuit_opens() {
        let mut b = Breaker::new(policy(), 7);
        assert_eq!(b.state(), BreakerState::Ok);
        let waits: Vec<Duration> = (0..6).map(|_| b.failure(None)).collect();
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (5000, 10000),
            (5000, 10000),
            (5000, 10000),
        ];
        for (w, (lo, hi)) in waits.iter().zip(bounds) {
            assert!(
                *w >= Duration::from_millis(lo) && *w <= Duration::from_millis(hi),
                "{w:?} not in {lo}..{hi} ms"
            );
        }
        assert_eq!(b.state(), BreakerState::CircuitOpen);
        b.success();
        assert_eq!(b.state(), BreakerState::Ok);
    }

    #[test]
    fn server_hints_win_up_to_a_cap() {
        let mut b = Breaker::new(policy(), 1);
        assert_eq!(
            b.failure(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            b.failure(Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
        assert_eq!(b.state(), BreakerState::Retrying);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn retry_info_round_trips() {
        let details = grpc_retry_details(8, "slow down", Duration::from_millis(1500));
        assert_eq!(
            grpc_retry_delay(&details),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(grpc_retry_delay(b"garbage"), None);
    }
}
