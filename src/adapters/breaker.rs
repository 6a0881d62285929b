//! A circuit breaker around the Kubernetes executor (project lookups come from a pod watch and
//! never touch it).
//!
//! Closed: calls go through; `threshold` infrastructure failures in a row (connection refused,
//! 5xx, timeouts, lost exec streams; never a command's non-zero exit) open it. Open: calls fail
//! at once with `ExecutorUnavailable` and a `retry_after`, without touching the cluster, until the
//! cool-down ends. Half-open: one probe goes through; success closes the circuit, failure opens
//! it again. A probe whose caller goes away (client disconnect) frees the slot for another.
//!
//! No crate fitted: the well-kept ones do not take our `Clock` (so tests would sleep through
//! cool-downs) nor expose state for `/ready` and the metric.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    domain::{CommandSpec, DomainError, ExecOutcome, Project},
    ports::{Clock, Executor, HealthCheck, OutputSink, Stop},
    telemetry::metrics::CIRCUIT_BREAKER_STATE,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: DateTime<Utc> },
    HalfOpen { probing: bool },
}

pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
    clock: Arc<dyn Clock>,
    /// The `executor` label of the state metric.
    executor: &'static str,
}

/// Permission for one call; report how it went with `success` or `failure`. Dropped unreported
/// (the caller went away), it neither closes nor opens the circuit.
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl CircuitBreaker {
    pub fn new(executor: &'static str, threshold: u32, cooldown: Duration, clock: Arc<dyn Clock>) -> Self {
        let breaker = Self { state: Mutex::new(State::Closed { failures: 0 }), threshold, cooldown, clock, executor };
        breaker.publish(State::Closed { failures: 0 });
        breaker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, state: State) {
        let value = match state {
            State::Closed { .. } => 0.0,
            State::HalfOpen { .. } => 1.0,
            State::Open { .. } => 2.0,
        };
        metrics::gauge!(CIRCUIT_BREAKER_STATE, "executor" => self.executor).set(value);
    }

    /// A permit to call, or how long until calling makes sense again.
    pub fn acquire(&self) -> Result<Permit<'_>, Duration> {
        let mut state = self.lock();
        let now = self.clock.now();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => {
                return Err((until - now).to_std().unwrap_or(Duration::from_secs(1)));
            }
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                self.publish(*state);
                true
            }
            // Another probe is on its way; its answer comes soon.
            State::HalfOpen { probing: true } => return Err(Duration::from_secs(1)),
        };
        Ok(Permit { breaker: self, probe, reported: false })
    }

    /// `closed`, `open` or `half_open`, for `/ready`.
    pub fn state_name(&self) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }

    fn on_success(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { failures: 0 }) {
            *state = State::Closed { failures: 0 };
            self.publish(*state);
        }
    }

    fn on_failure(&self, probe: bool) {
        let mut state = self.lock();
        let open = State::Open { until: self.clock.now() + self.cooldown };
        *state = match *state {
            State::Closed { failures } if failures + 1 >= self.threshold => open,
            State::Closed { failures } => State::Closed { failures: failures + 1 },
            State::HalfOpen { .. } if probe => open,
            other => other,
        };
        self.publish(*state);
    }

    fn on_abandoned(&self, probe: bool) {
        let mut state = self.lock();
        if probe && *state == (State::HalfOpen { probing: true }) {
            *state = State::HalfOpen { probing: false };
        }
    }

    /// Runs `call` under the breaker: refused at once while open; its result, if it is an
    /// `ExecutorUnavailable`, counts as a failure, anything else as a sign of health.
    pub async fn call<T>(&self, call: impl Future<Output = Result<T, DomainError>>) -> Result<T, DomainError> {
        let permit = self.acquire().map_err(|retry_after| DomainError::ExecutorUnavailable {
            reason: "the Kubernetes API is failing; circuit open".into(),
            retry_after: Some(retry_after),
        })?;
        let result = call.await;
        match &result {
            Err(DomainError::ExecutorUnavailable { .. }) => permit.failure(),
            _ => permit.success(),
        }
        result
    }
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.on_success();
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.on_failure(self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.on_abandoned(self.probe);
        }
    }
}

#[async_trait]
impl HealthCheck for CircuitBreaker {
    fn name(&self) -> &'static str {
        "executor"
    }

    /// Reports the circuit but never fails readiness: when the API server is down every replica
    /// sees it, and pulling them all from the Service would turn clear 503s into refused
    /// connections.
    async fn check(&self) -> Result<String, String> {
        Ok(match self.state_name() {
            "closed" => "ok".to_owned(),
            state => format!("circuit {state}"),
        })
    }
}

/// `Executor` behind the breaker.
pub struct BreakerExecutor<E> {
    pub breaker: Arc<CircuitBreaker>,
    pub inner: E,
}

#[async_trait]
impl<E: Executor> Executor for BreakerExecutor<E> {
    async fn run(
        &self,
        project: &Project,
        spec: &CommandSpec,
        live: OutputSink,
        stop: &Stop,
    ) -> Result<ExecOutcome, DomainError> {
        self.breaker.call(self.inner.run(project, spec, live, stop)).await
    }

    async fn check(&self, project: &Project, spec: &CommandSpec) -> Result<(), DomainError> {
        self.breaker.call(self.inner.check(project, spec)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestClock(Mutex<DateTime<Utc>>);

    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    fn breaker() -> (CircuitBreaker, Arc<TestClock>) {
        let clock = Arc::new(TestClock(Mutex::new(Utc::now())));
        (CircuitBreaker::new("test", 3, Duration::from_secs(30), clock.clone()), clock)
    }

    fn advance(clock: &TestClock, secs: i64) {
        *clock.0.lock().unwrap() += chrono::Duration::seconds(secs);
    }

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let (breaker, _) = breaker();
        breaker.acquire().unwrap().failure();
        breaker.acquire().unwrap().failure();
        breaker.acquire().unwrap().success();
        breaker.acquire().unwrap().failure();
        breaker.acquire().unwrap().failure();
        assert_eq!(breaker.state_name(), "closed", "a success in between resets the count");
        breaker.acquire().unwrap().failure();
        assert_eq!(breaker.state_name(), "open");
        let retry = breaker.acquire().err().unwrap();
        assert!(retry <= Duration::from_secs(30) && retry > Duration::from_secs(29));
    }

    #[test]
    fn one_probe_after_the_cooldown_decides() {
        let (breaker, clock) = breaker();
        for _ in 0..3 {
            breaker.acquire().unwrap().failure();
        }
        advance(&clock, 31);
        let probe = breaker.acquire().unwrap();
        assert!(breaker.acquire().is_err(), "only one probe at a time");
        probe.failure();
        assert_eq!(breaker.state_name(), "open", "a failed probe opens it again");
        advance(&clock, 31);
        breaker.acquire().unwrap().success();
        assert_eq!(breaker.state_name(), "closed");
        assert!(breaker.acquire().is_ok());
    }

    #[test]
    fn an_abandoned_probe_lets_another_one_go() {
        let (breaker, clock) = breaker();
        for _ in 0..3 {
            breaker.acquire().unwrap().failure();
        }
        advance(&clock, 31);
        drop(breaker.acquire().unwrap());
        assert_eq!(breaker.state_name(), "half_open");
        breaker.acquire().expect("a new probe").success();
        assert_eq!(breaker.state_name(), "closed");
    }
}
