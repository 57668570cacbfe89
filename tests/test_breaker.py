"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

import pytest

from heartbeat.store.breaker import BreakerState, CircuitBreaker, CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[BreakerState]:
    return []


@pytest.fixture
def breaker(clock: Clock, changes: list[BreakerState]) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, open_seconds=5, on_change=changes.append, clock=clock)


def test_it_opens_after_the_threshold_of_failures_in_a_row(breaker: CircuitBreaker, changes) -> None:
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and changes == [BreakerState.OPEN]
    with pytest.raises(CircuitOpenError):
        breaker.before_call()


def test_a_success_resets_the_count_of_failures(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_after_the_open_time_exactly_one_trial_goes_through(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # others wait for it


def test_a_successful_trial_closes_it(breaker: CircuitBreaker, clock: Clock, changes) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    breaker.before_call()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_trial_opens_it_again_for_the_whole_time(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        breaker.before_call()


def test_a_trial_that_never_reports_is_replaced_after_the_open_time(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    breaker.before_call()  # this trial's thread dies without a word
    clock.now += 5
    breaker.before_call()  # a new trial
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
