//! Exponential backoff for retried writes: the first retry waits `first`, each next one twice
//! as long, capped at `max`; after `retries` retries the caller gives up (and raises its
//! operational alert).

use std::time::Duration;

/// The waits between attempts of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub first: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
    /// Retries after the first attempt; 0 means one attempt only.
    pub retries: u32,
}

impl Backoff {
    /// The wait before retry number `retry` (0 is the first retry), or `None` once the retries
    /// are used up.
    pub fn wait(&self, retry: u32) -> Option<Duration> {
        (retry < self.retries).then(|| self.delay(retry))
    }

    /// The wait before retry number `retry` whatever the retry limit: for loops that keep
    /// trying (a commit that must land) and count their own attempts.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// [`Backoff::delay`] with full jitter: a uniformly random wait up to it, so that many
    /// writers throttled together do not retry together.
    pub fn jittered(&self, retry: u32) -> Duration {
        let window = u64::try_from(self.delay(retry).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(jitter(window))
    }

    /// Runs `attempt` until it succeeds, `retryable` says an error is final, or the retries are
    /// used up; sleeps the backoff between attempts and calls `on_retry` before each retry.
    pub fn retry<T, E>(
        &self,
        mut attempt: impl FnMut() -> Result<T, E>,
        retryable: impl Fn(&E) -> bool,
        mut on_retry: impl FnMut(&E),
    ) -> Result<T, E> {
        let mut retry = 0;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let wait = retryable(&e).then(|| self.wait(retry)).flatten();
                    let Some(wait) = wait else { return Err(e) };
                    on_retry(&e);
                    std::thread::sleep(wait);
                    retry += 1;
                }
            }
        }
    }
}

/// A uniformly random number in `0..=max` (half of `max` if the system has no randomness).
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    getrandom::u64().map_or(max / 2, |r| r % (max + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_its_window() {
        for _ in 0..100 {
            assert!(jitter(50) <= 50);
        }
        assert_eq!(jitter(0), 0);
        let b = Backoff {
            first: Duration::from_millis(10),
            max: Duration::from_millis(25),
            retries: 1,
        };
        assert_eq!(b.delay(5), Duration::from_millis(25));
        assert!(b.jittered(5) <= Duration::from_millis(25));
    }

    #[test]
    fn doubles_up_to_the_cap_and_stops() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(300),
            retries: 4,
        };
        let waits: Vec<_> = (0..5).map(|r| b.wait(r)).collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(300)),
                Some(Duration::from_millis(300)),
                None
            ]
        );
    }

    #[test]
    fn retries_until_success_or_final_error() {
        let b = Backoff {
            first: Duration::ZERO,
            max: Duration::ZERO,
            retries: 3,
        };
        let mut calls = 0;
        let mut retried = 0;
        let out: Result<u32, &str> = b.retry(
            || {
                calls += 1;
                if calls < 3 {
                    Err("busy")
                } else {
                    Ok(calls)
                }
            },
            |_| true,
            |_| retried += 1,
        );
        assert_eq!(out, Ok(3));
        assert_eq!(retried, 2);
        let mut calls = 0;
        let out: Result<(), &str> = b.retry(
            || {
                calls += 1;
                Err("final")
            },
            |e| *e != "final",
            |_| {},
        );
        assert_eq!((out, calls), (Err("final"), 1));
        let mut calls = 0;
        let out: Result<(), &str> = b.retry(
            || {
                calls += 1;
                Err("busy")
            },
            |_| true,
            |_| {},
        );
        assert_eq!((out, calls), (Err("busy"), 4));
    }
}
