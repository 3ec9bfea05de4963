//! Deadlines, backoff with full jitter, and `Retry-After` parsing: the one retry loop
//! every network call goes through.
//!
//! Policy (the contract's "Time" section): transient failures are retried with
//! exponential backoff and full jitter (sleep a random time in [0, min(cap, base·2^n)]),
//! so a fleet that starts together spreads out instead of retrying in lock-step. A
//! server's `Retry-After` (seconds, HTTP date, or Azure's `x-ms-retry-after-ms`) is
//! waited out first and the jitter comes on top: clients throttled at the same moment
//! come back spread over the jitter window, not together when the wait ends. A server
//! that asks for a wait is alive and throttling, so those attempts are bounded by the
//! deadline (and a per-request cap sized above the default deadline), not by the
//! smaller cap on failures. Nothing sleeps past the overall deadline: when the next
//! sleep would cross it, the loop stops and reports the last failure.
//! `doc/scale-test.md` measures this with a fleet of 1,000 processes.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;

/// The end of the whole resolution (`--timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// How persistent one kind of call is.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub base: Duration,
    pub cap: Duration,
    /// Attempts in all, a per-request cap so a throttled fleet cannot storm. Reached
    /// only by a server that keeps asking to wait (`Retry-After`) for longer than the
    /// default deadline: set so that the deadline, not the count, ends throttling.
    pub max_attempts: u32,
    /// Attempts that may fail without the server asking for a wait (5xx without
    /// `Retry-After`, resets, timeouts): a broken server is given up on sooner.
    pub max_failures: u32,
    /// Attempts when nothing accepts the connection: a refused endpoint fails fast.
    pub max_connect_attempts: u32,
}

impl Policy {
    /// Managed-identity endpoints. IMDS may answer 410 for up to 70 s while it
    /// updates; with full jitter the expected sleep is half the ceiling, so the
    /// attempt cap is set high enough that the deadline, not the count, ends a
    /// long 410 spell (20 attempts average ~70 s of sleep at an 8 s ceiling).
    pub const IDENTITY: Policy = Policy {
        base: Duration::from_millis(500),
        cap: Duration::from_secs(8),
        max_attempts: 20,
        max_failures: 20,
        max_connect_attempts: 3,
    };
    /// Entra ID and Key Vault. A failing server is given 8 attempts (~10 s of
    /// expected sleep); a throttling one (429 with `Retry-After`, which Key Vault
    /// sends) 30, whose expected sleep (~80 s at `Retry-After: 1`) is past the
    /// default deadline: a fleet sharing a vault's 4,000-per-10-s limit waits its
    /// turn instead of failing after ~17 s. The ceiling is 4 s because it is what a
    /// throttled fleet overshoots by: when the vault's backlog clears, the last
    /// requests are asleep for up to `Retry-After` + ceiling. With 8 s, 1,000
    /// replicas took about 1.4x (up to 1.6x) the throttle's minimum of 15 s; with
    /// 4 s, 1.1-1.25x, for ~40% more 429s when throttling lasts 40 s
    /// (doc/scale-test.md).
    pub const SERVICE: Policy = Policy {
        base: Duration::from_millis(250),
        cap: Duration::from_secs(4),
        max_attempts: 30,
        max_failures: 8,
        max_connect_attempts: 3,
    };
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T, E> {
    Done(T),
    /// Permanent: reported at once.
    Fatal(E),
    /// Transient: `retry_after` is the server's wish, if it said.
    Retry {
        error: E,
        retry_after: Option<Duration>,
        connect: bool,
    },
}

/// The last error, and whether retrying stopped because time ran out.
#[derive(Debug, Clone)]
pub struct Exhausted<E> {
    pub error: E,
    pub attempts: u32,
    pub deadline_hit: bool,
}

/// Runs `attempt` until it is done, fails permanently, runs out of attempts, or the
/// next sleep would cross `deadline`.
pub async fn run<T, E, F, Fut>(
    deadline: Deadline,
    policy: Policy,
    mut attempt: F,
) -> Result<T, Exhausted<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut connect_failures = 0;
    let mut failures = 0;
    for n in 1.. {
        let (error, retry_after, connect) = match attempt(n).await {
            Attempt::Done(value) => return Ok(value),
            Attempt::Fatal(error) => {
                return Err(Exhausted {
                    error,
                    attempts: n,
                    deadline_hit: false,
                });
            }
            Attempt::Retry {
                error,
                retry_after,
                connect,
            } => (error, retry_after, connect),
        };
        if connect {
            connect_failures += 1;
        }
        if retry_after.is_none() {
            failures += 1;
        }
        let out_of_attempts = n >= policy.max_attempts
            || failures >= policy.max_failures
            || connect_failures >= policy.max_connect_attempts;
        if out_of_attempts || deadline.expired() {
            return Err(Exhausted {
                error,
                attempts: n,
                deadline_hit: deadline.expired(),
            });
        }
        let delay = backoff_delay(policy, n, retry_after);
        if delay >= deadline.remaining() {
            return Err(Exhausted {
                error,
                attempts: n,
                deadline_hit: true,
            });
        }
        crate::debug!("retrying in {} ms (attempt {n} failed)", delay.as_millis());
        tokio::time::sleep(delay).await;
    }
    unreachable!("the attempt loop only ends by returning")
}

/// Full jitter over the exponential ceiling, after the server's Retry-After.
///
/// The jitter is added to the wait, not floored by it: `max(wait, jitter)` would be
/// exactly `wait` whenever the ceiling is below it (Key Vault's `Retry-After: 1`
/// against the first ceilings of 0.5 and 1 s), and every client throttled in the
/// same second would come back in the same instant.
fn backoff_delay(policy: Policy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let ceiling = policy
        .base
        .saturating_mul(1u32 << attempt.min(16))
        .min(policy.cap);
    let jittered = ceiling.mul_f64(random_fraction());
    retry_after
        .unwrap_or(Duration::ZERO)
        .saturating_add(jittered)
}

fn random_fraction() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

/// The server's wait request, from Azure's millisecond headers or `Retry-After`
/// (delta-seconds or an HTTP date). Absurd values are capped at 60 s.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let millis = ["x-ms-retry-after-ms", "retry-after-ms"]
        .iter()
        .find_map(|name| header(name).and_then(|v| v.parse::<u64>().ok()))
        .map(Duration::from_millis);
    millis
        .or_else(|| header("retry-after").and_then(parse_retry_after))
        .map(|d| d.min(Duration::from_secs(60)))
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_forms() {
        let in_30s = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        for (pairs, expected) in [
            (vec![("retry-after", "2")], Some((2000, 2000))),
            (vec![("retry-after", " 0 ")], Some((0, 0))),
            (vec![("x-ms-retry-after-ms", "1500")], Some((1500, 1500))),
            (
                vec![("retry-after-ms", "250"), ("retry-after", "9")],
                Some((250, 250)),
            ),
            (
                vec![("x-ms-retry-after-ms", "100"), ("retry-after", "9")],
                Some((100, 100)),
            ),
            (
                vec![("retry-after", in_30s.as_str())],
                Some((28_000, 30_000)),
            ),
            (
                vec![("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
                Some((0, 0)),
            ),
            (vec![("retry-after", "3600")], Some((60_000, 60_000))),
            (vec![("retry-after", "soon")], None),
            (vec![], None),
        ] {
            let got = retry_after(&headers(&pairs)).map(|d| d.as_millis());
            match expected {
                None => assert_eq!(got, None, "{pairs:?}"),
                Some((lo, hi)) => {
                    let got = got.unwrap_or_else(|| panic!("{pairs:?}"));
                    assert!((lo..=hi).contains(&got), "{pairs:?}: {got}");
                }
            }
        }
    }

    #[test]
    fn backoff_is_jittered_under_the_ceiling_and_floored_by_retry_after() {
        let policy = Policy::SERVICE;
        for attempt in 1..20 {
            let d = backoff_delay(policy, attempt, None);
            assert!(d <= policy.cap, "{attempt}: {d:?}");
        }
        let d = backoff_delay(policy, 1, Some(Duration::from_secs(3)));
        assert!(d >= Duration::from_secs(3));
    }

    /// Key Vault's `Retry-After: 1` is above the first ceilings (0.5 s, 1 s): the
    /// jitter must still spread the retries (the scale test saw 71% of a fleet's
    /// retries land exactly 1,000 ms after their 429 when the wait was a floor).
    #[test]
    fn retry_after_waits_are_jittered_not_lock_step() {
        let wait = Duration::from_secs(1);
        for attempt in [1, 2, 5] {
            let ceiling = Policy::SERVICE
                .base
                .saturating_mul(1 << attempt)
                .min(Policy::SERVICE.cap);
            let delays: Vec<Duration> = (0..200)
                .map(|_| backoff_delay(Policy::SERVICE, attempt, Some(wait)))
                .collect();
            let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
            assert!(
                *lo >= wait && *hi <= wait + ceiling,
                "{attempt}: {lo:?}..{hi:?}"
            );
            assert!(
                *hi - *lo > ceiling / 2,
                "{attempt}: not spread: {lo:?}..{hi:?}"
            );
        }
    }

    /// A vault that throttles for 40 s (a fleet waiting its turn) is waited out:
    /// the cap on failures (8 attempts, at most ~32 s of sleep) does not apply to
    /// answers that ask for a wait. A server that never stops throttling still
    /// meets the per-request cap, and one that fails without asking, the smaller one.
    #[tokio::test(start_paused = true)]
    async fn throttling_is_waited_out_until_the_attempt_cap() {
        let deadline = Deadline::after(Duration::from_secs(600));
        let started = tokio::time::Instant::now();
        let result = run(deadline, Policy::SERVICE, |n| async move {
            if started.elapsed() < Duration::from_secs(40) {
                Attempt::Retry {
                    error: "throttled",
                    retry_after: Some(Duration::from_secs(1)),
                    connect: false,
                }
            } else {
                Attempt::Done(n)
            }
        })
        .await;
        let attempts = result.unwrap();
        assert!(
            attempts > Policy::SERVICE.max_failures && attempts <= Policy::SERVICE.max_attempts,
            "{attempts}"
        );

        let throttled = |_| async {
            Attempt::<(), _>::Retry {
                error: "throttled",
                retry_after: Some(Duration::from_secs(1)),
                connect: false,
            }
        };
        let err = run(deadline, Policy::SERVICE, throttled).await.unwrap_err();
        assert_eq!(
            (err.attempts, err.deadline_hit),
            (Policy::SERVICE.max_attempts, false)
        );

        // Throttled for a while, then failing: the failures have their own cap.
        let err = run(deadline, Policy::SERVICE, |n| async move {
            Attempt::<(), _>::Retry {
                error: "x",
                retry_after: (n <= 5).then_some(Duration::from_secs(1)),
                connect: false,
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 5 + Policy::SERVICE.max_failures);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_fatal_attempts_and_deadline() {
        let deadline = Deadline::after(Duration::from_secs(60));
        let result: Result<(), _> = run(deadline, Policy::SERVICE, |_| async {
            Attempt::Fatal("nope")
        })
        .await;
        assert_eq!(result.unwrap_err().attempts, 1);

        let result: Result<(), _> = run(deadline, Policy::SERVICE, |_| async {
            Attempt::Retry {
                error: "busy",
                retry_after: None,
                connect: false,
            }
        })
        .await;
        assert_eq!(result.unwrap_err().attempts, Policy::SERVICE.max_failures);

        let result: Result<(), _> = run(deadline, Policy::SERVICE, |_| async {
            Attempt::Retry {
                error: "refused",
                retry_after: None,
                connect: true,
            }
        })
        .await;
        assert_eq!(
            result.unwrap_err().attempts,
            Policy::SERVICE.max_connect_attempts
        );

        let short = Deadline::after(Duration::from_secs(1));
        let result: Result<(), _> = run(short, Policy::SERVICE, |_| async {
            Attempt::Retry {
                error: "throttled",
                retry_after: Some(Duration::from_secs(5)),
                connect: false,
            }
        })
        .await;
        let err = result.unwrap_err();
        assert!(err.deadline_hit && err.attempts == 1);

        let mut calls = 0;
        let result = run(deadline, Policy::SERVICE, |n| {
            calls += 1;
            async move {
                if n < 3 {
                    Attempt::Retry {
                        error: "x",
                        retry_after: None,
                        connect: false,
                    }
                } else {
                    Attempt::Done(n)
                }
            }
        })
        .await;
        assert_eq!((result.unwrap(), calls), (3, 3));
    }
}
