use super::{window::Outcomes, *};

use BreakerState::{Closed, HalfOpen, Open};
use Outcome::{Failure, Success};

const S: Outcome = Success;
const F: Outcome = Failure;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Defaults with the consecutive-failure rule off, to test the error rate alone.
fn rate_only() -> BreakerSettings {
    BreakerSettings {
        consecutive_failures: 0,
        ..BreakerSettings::default()
    }
}

/// Record `outcomes` one second apart from `start`; the transitions that happened.
fn feed(b: &mut Breaker, start: Duration, outcomes: &[Outcome]) -> Vec<Transition> {
    outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| b.record(start + secs(i as u64), *o))
        .collect()
}

/// A breaker opened by consecutive failures at t = 0.
fn opened(settings: BreakerSettings) -> Breaker {
    let mut b = Breaker::new(settings, Duration::ZERO);
    let n = settings.consecutive_failures.max(1);
    for _ in 0..n {
        b.record(Duration::ZERO, F);
    }
    assert_eq!(b.state(), Open);
    b
}

#[test]
fn defaults_are_the_documented_ones_and_valid() {
    let d = BreakerSettings::default();
    assert_eq!(d.window, Window::Time(secs(30)));
    assert_eq!(d.error_threshold, 0.5);
    assert_eq!(d.min_requests, 10);
    assert_eq!(d.consecutive_failures, 5);
    assert_eq!(d.reset_timeout, secs(30));
    assert_eq!(
        d.backoff,
        Backoff::Exponential {
            factor: 2.0,
            cap: secs(300)
        }
    );
    assert_eq!((d.half_open_trials, d.half_open_interval), (3, secs(1)));
    assert_eq!(d.success_threshold, 2);
    assert_eq!(d.validate(), Ok(()));
}

#[test]
fn new_breaker_is_closed_and_empty() {
    let b = Breaker::new(BreakerSettings::default(), secs(7));
    assert_eq!(b.state(), Closed);
    assert_eq!(b.since(), secs(7));
    assert_eq!(b.gate(), GateState::Closed);
    assert_eq!(b.stats(secs(7)), WindowStats::default());
    assert_eq!(
        (b.opens(), b.transitions(), b.consecutive_opens()),
        (0, 0, 0)
    );
    assert_eq!(b.reset_timeout(), secs(30));
    assert_eq!(b.open_until(), None);
    assert_eq!(b.last_outcome(), None);
    assert!(b.last_transition().is_none());
}

#[test]
fn minimum_requests_gate_the_error_rate() {
    // (min_requests, failures recorded, expected state)
    let table = [
        (10, 9, Closed),
        (10, 10, Open),
        (1, 1, Open),
        (20, 19, Closed),
        (20, 20, Open),
    ];
    for (min, failures, want) in table {
        let settings = BreakerSettings {
            min_requests: min,
            ..rate_only()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        let t = feed(&mut b, Duration::ZERO, &vec![F; failures]);
        assert_eq!(b.state(), want, "min {min}, {failures} failures at 100%");
        if want == Open {
            assert_eq!(t.len(), 1);
            assert_eq!(
                t[0].reason,
                TransitionReason::ErrorRate {
                    rate: 1.0,
                    requests: min as u64
                }
            );
        } else {
            assert!(t.is_empty());
            assert_eq!(b.stats(secs(failures as u64)).error_rate(), 1.0);
        }
    }
}

#[test]
fn error_rate_opens_at_the_threshold_not_below() {
    // (threshold, successes then failures, expected state, expected reason rate/requests)
    let table = [
        (0.5, 5, 5, Open, Some((0.5, 10))),
        (0.5, 6, 4, Closed, None),
        (0.5, 11, 10, Closed, None), // 10/21 just below
        (0.5, 10, 10, Open, Some((0.5, 20))),
        (0.7, 3, 7, Open, Some((0.7, 10))),
        (0.7, 4, 6, Closed, None),
        (1.0, 0, 10, Open, Some((1.0, 10))),
        (1.0, 1, 9, Closed, None),
        (0.1, 9, 1, Open, Some((0.1, 10))),
    ];
    for (threshold, ok, bad, want, reason) in table {
        let settings = BreakerSettings {
            error_threshold: threshold,
            ..rate_only()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        let mut outcomes = vec![S; ok];
        outcomes.extend(vec![F; bad]);
        let t = feed(&mut b, Duration::ZERO, &outcomes);
        assert_eq!(
            b.state(),
            want,
            "threshold {threshold}, {ok} ok, {bad} failed"
        );
        match reason {
            Some((rate, requests)) => {
                assert_eq!(t.len(), 1);
                assert_eq!(t[0].reason, TransitionReason::ErrorRate { rate, requests });
                assert_eq!((t[0].from, t[0].to), (Closed, Open));
            }
            None => assert!(t.is_empty()),
        }
    }
}

#[test]
fn error_rate_is_checked_on_a_success_too() {
    // Five failures, then successes: the tenth outcome (a success) reaches min_requests
    // at exactly 50%.
    let mut b = Breaker::new(rate_only(), Duration::ZERO);
    let mut outcomes = vec![F; 5];
    outcomes.extend(vec![S; 5]);
    let t = feed(&mut b, Duration::ZERO, &outcomes);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].at, secs(9));
    assert_eq!(
        t[0].reason,
        TransitionReason::ErrorRate {
            rate: 0.5,
            requests: 10
        }
    );
}

#[test]
fn consecutive_failures_open_below_minimum_requests() {
    // (consecutive_failures, outcomes, expected state, reason count)
    let table: [(u32, &[Outcome], BreakerState, Option<u32>); 7] = [
        (5, &[F, F, F, F, F], Open, Some(5)),
        (5, &[F, F, F, F], Closed, None),
        (5, &[F, F, F, F, S, F, F, F, F], Closed, None),
        (5, &[S, S, F, F, F, F, F], Open, Some(5)),
        (1, &[F], Open, Some(1)),
        (3, &[F, S, F, F, F], Open, Some(3)),
        (0, &[F, F, F, F, F, F, F, F, F], Closed, None), // off, and under min_requests
    ];
    for (n, outcomes, want, count) in table {
        let settings = BreakerSettings {
            consecutive_failures: n,
            ..BreakerSettings::default()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        let t = feed(&mut b, Duration::ZERO, outcomes);
        assert_eq!(b.state(), want, "consecutive {n}, {outcomes:?}");
        match count {
            Some(failures) => {
                assert_eq!(t.len(), 1);
                assert_eq!(
                    t[0].reason,
                    TransitionReason::ConsecutiveFailures { failures }
                );
            }
            None => assert!(t.is_empty()),
        }
    }
}

#[test]
fn error_rate_wins_when_both_rules_fire() {
    let settings = BreakerSettings {
        min_requests: 5,
        ..BreakerSettings::default()
    };
    let mut b = Breaker::new(settings, Duration::ZERO);
    let t = feed(&mut b, Duration::ZERO, &[F; 5]);
    assert_eq!(
        t[0].reason,
        TransitionReason::ErrorRate {
            rate: 1.0,
            requests: 5
        }
    );
}

#[test]
fn count_window_evicts_the_oldest_outcomes() {
    // (window, outcomes, expected requests, failures) with nothing able to open.
    let table: [(u32, &[Outcome], u64, u64); 5] = [
        (3, &[F, F, S, S, S], 3, 0),
        (3, &[F, F, S], 3, 2),
        (3, &[F, F, S, S], 3, 1),
        (4, &[S, F], 2, 1),
        (1, &[F, F, S], 1, 0),
    ];
    for (n, outcomes, requests, failures) in table {
        let settings = BreakerSettings {
            window: Window::Count(n),
            min_requests: 1000,
            ..rate_only()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        feed(&mut b, Duration::ZERO, outcomes);
        let stats = b.stats(secs(1000));
        assert_eq!(
            (stats.requests, stats.failures),
            (requests, failures),
            "count {n}, {outcomes:?}"
        );
    }
    // Behaviour: over the last 4, 2 failures are 50%; over all 7 they would be 29%.
    let settings = BreakerSettings {
        window: Window::Count(4),
        min_requests: 4,
        ..rate_only()
    };
    let mut b = Breaker::new(settings, Duration::ZERO);
    let t = feed(&mut b, Duration::ZERO, &[S, S, S, S, S, F, F]);
    assert_eq!(
        t[0].reason,
        TransitionReason::ErrorRate {
            rate: 0.5,
            requests: 4
        }
    );
}

#[test]
fn time_window_evicts_outcomes_once_they_are_window_old() {
    let settings = BreakerSettings {
        window: Window::Time(secs(30)),
        min_requests: 1000,
        ..rate_only()
    };
    let mut b = Breaker::new(settings, Duration::ZERO);
    b.record(secs(0), F);
    b.record(secs(10), S);
    b.record(secs(20), S);
    // (now, expected requests, failures)
    let table = [
        (secs(20), 3, 1),
        (ms(29_999), 3, 1),
        (secs(30), 2, 0),
        (secs(39), 2, 0),
        (secs(40), 1, 0),
        (secs(50), 0, 0),
    ];
    for (now, requests, failures) in table {
        let stats = b.stats(now);
        assert_eq!(
            (stats.requests, stats.failures),
            (requests, failures),
            "at {now:?}"
        );
    }

    // Behaviour: F@0 F@1 S@2 then S@t with min 4 at 50%: opens only while F@0 counts.
    // (t of the fourth outcome, expected state)
    let table = [(ms(29_999), Open), (secs(30), Closed), (secs(31), Closed)];
    for (t, want) in table {
        let settings = BreakerSettings {
            window: Window::Time(secs(30)),
            min_requests: 4,
            ..rate_only()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        b.record(secs(0), F);
        b.record(secs(1), F);
        b.record(secs(2), S);
        b.record(t, S);
        assert_eq!(b.state(), want, "fourth outcome at {t:?}");
    }
}

#[test]
fn time_window_memory_is_bounded_by_slots() {
    let settings = BreakerSettings {
        window: Window::Time(secs(10)),
        min_requests: u32::MAX,
        ..rate_only()
    };
    let mut b = Breaker::new(settings, Duration::ZERO);
    // 100 000 outcomes over 20 s, one every 200 µs.
    for i in 0..100_000u64 {
        b.record(
            Duration::from_micros(i * 200),
            if i % 4 == 0 { F } else { S },
        );
    }
    let Outcomes::Time { slots, .. } = &b.window else {
        panic!("time window expected");
    };
    assert!(
        slots.len() <= TIME_WINDOW_SLOTS as usize + 1,
        "{}",
        slots.len()
    );
    // The last 10 s hold about half the outcomes (slots expire up to 100 ms early).
    let stats = b.stats(Duration::from_micros(99_999 * 200));
    assert!((49_000..=50_000).contains(&stats.requests), "{stats:?}");
    assert!((stats.error_rate() - 0.25).abs() < 0.01, "{stats:?}");
}

#[test]
fn open_moves_to_half_open_exactly_at_the_reset_timeout() {
    // (poll at, expected state after the poll)
    let table = [
        (secs(1), Open),
        (ms(29_999), Open),
        (secs(30), HalfOpen),
        (secs(45), HalfOpen),
    ];
    for (at, want) in table {
        let mut b = opened(BreakerSettings::default());
        assert_eq!(b.open_until(), Some(secs(30)));
        let t = b.poll(at);
        assert_eq!(b.state(), want, "poll at {at:?}");
        if want == HalfOpen {
            let t = t.expect("a transition");
            assert_eq!((t.from, t.to, t.at), (Open, HalfOpen, at));
            assert_eq!(t.reason, TransitionReason::ResetTimeout);
            assert_eq!(b.since(), at);
            assert_eq!(
                b.gate(),
                GateState::HalfOpen {
                    trials_per_interval: 3,
                    interval: secs(1)
                }
            );
        } else {
            assert_eq!(t, None);
            assert_eq!(b.gate(), GateState::Open);
        }
    }
}

#[test]
fn poll_does_nothing_when_closed_or_half_open() {
    let mut b = Breaker::new(BreakerSettings::default(), Duration::ZERO);
    assert_eq!(b.poll(secs(1000)), None);
    let mut b = opened(BreakerSettings::default());
    assert!(b.poll(secs(30)).is_some());
    assert_eq!(b.poll(secs(1000)), None);
    assert_eq!(b.state(), HalfOpen);
}

#[test]
fn outcomes_while_open_are_ignored_but_shown() {
    let mut b = opened(BreakerSettings::default());
    for (i, o) in [S, S, S, F, F, F, F, F, F].into_iter().enumerate() {
        assert_eq!(b.record(secs(i as u64), o), None);
    }
    assert_eq!(b.state(), Open);
    assert_eq!(b.stats(secs(9)), WindowStats::default());
    assert_eq!(b.last_outcome(), Some((secs(8), F)));
    assert_eq!(b.opens(), 1);
}

#[test]
fn half_open_admits_only_the_trial_budget_per_interval() {
    let mut b = opened(BreakerSettings::default());
    b.poll(secs(30));
    // (asked at, admitted?) — 3 per 1 s interval, counted from entering half-open.
    let table = [
        (secs(30), true),
        (secs(30), true),
        (ms(30_500), true),
        (ms(30_999), false),
        (secs(31), true),
        (secs(31), true),
        (secs(31), true),
        (secs(31), false),
        (secs(35), true),
    ];
    for (i, (at, want)) in table.into_iter().enumerate() {
        assert_eq!(b.try_admit_trial(at), want, "request {i} at {at:?}");
    }
    // Closed admits everything, open nothing.
    let mut closed = Breaker::new(BreakerSettings::default(), Duration::ZERO);
    assert!((0..100).all(|_| closed.try_admit_trial(Duration::ZERO)));
    let mut open = opened(BreakerSettings::default());
    assert!(!open.try_admit_trial(secs(1)));
}

#[test]
fn half_open_closes_after_success_threshold_and_reopens_on_failure() {
    // (success_threshold, trial outcomes, expected state, expected last reason)
    let table: [(u32, &[Outcome], BreakerState, TransitionReason); 7] = [
        (2, &[S], HalfOpen, TransitionReason::ResetTimeout),
        (2, &[S, S], Closed, TransitionReason::TrialSucceeded),
        (3, &[S, S], HalfOpen, TransitionReason::ResetTimeout),
        (3, &[S, S, S], Closed, TransitionReason::TrialSucceeded),
        (1, &[S], Closed, TransitionReason::TrialSucceeded),
        (2, &[F], Open, TransitionReason::TrialFailed),
        (3, &[S, S, F], Open, TransitionReason::TrialFailed),
    ];
    for (threshold, trials, want, reason) in table {
        let settings = BreakerSettings {
            success_threshold: threshold,
            ..BreakerSettings::default()
        };
        let mut b = opened(settings);
        b.poll(secs(30));
        feed(&mut b, secs(30), trials);
        assert_eq!(b.state(), want, "threshold {threshold}, trials {trials:?}");
        assert_eq!(b.last_transition().map(|t| t.reason), Some(reason));
        if want == Closed {
            assert_eq!(b.consecutive_opens(), 0);
            assert_eq!(b.stats(secs(100)), WindowStats::default());
            assert_eq!(b.gate(), GateState::Closed);
        }
        if want == Open {
            assert_eq!(b.reset_timeout(), secs(60), "second consecutive open");
        }
    }
}

#[test]
fn backoff_grows_over_consecutive_opens() {
    let exp = |factor, cap| Backoff::Exponential { factor, cap };
    // (backoff, base, reset timeouts of opens 1, 2, 3, …)
    let table: [(Backoff, Duration, &[u64]); 5] = [
        (
            Backoff::Immediate,
            secs(30),
            &[30_000, 30_000, 30_000, 30_000],
        ),
        (
            Backoff::Linear,
            secs(30),
            &[30_000, 60_000, 90_000, 120_000],
        ),
        (
            exp(2.0, secs(300)),
            secs(30),
            &[30_000, 60_000, 120_000, 240_000, 300_000, 300_000],
        ),
        (
            exp(1.5, secs(100)),
            secs(30),
            &[30_000, 45_000, 67_500, 100_000],
        ),
        (exp(1.0, secs(100)), secs(15), &[15_000, 15_000, 15_000]),
    ];
    for (backoff, base, want) in table {
        let settings = BreakerSettings {
            backoff,
            reset_timeout: base,
            ..BreakerSettings::default()
        };
        // Through the state machine: open, half-open on time, fail the trial, repeat.
        let mut b = opened(settings);
        let mut opened_at = Duration::ZERO;
        for (n, want_ms) in want.iter().enumerate() {
            let want = ms(*want_ms);
            assert_eq!(b.reset_timeout(), want, "{backoff:?} open {}", n + 1);
            assert_eq!(b.open_until(), Some(opened_at + want));
            assert_eq!(b.consecutive_opens(), n as u32 + 1);
            assert_eq!(b.poll(opened_at + want - ms(1)), None);
            assert!(b.poll(opened_at + want).is_some());
            opened_at += want;
            let t = b.record(opened_at, F).expect("trial failure reopens");
            assert_eq!(t.reason, TransitionReason::TrialFailed);
            assert_eq!(t.reset_timeout, Some(b.reset_timeout()));
        }
        // Directly, from the same table.
        for (n, want_ms) in want.iter().enumerate() {
            assert_eq!(backoff.timeout(base, n as u32 + 1), ms(*want_ms));
        }
    }
}

#[test]
fn backoff_never_panics_at_the_extremes() {
    let base = secs(30);
    // (backoff, opens, expected)
    let table = [
        (Backoff::Immediate, 0, base),
        (Backoff::Linear, 0, base),
        (Backoff::Linear, u32::MAX, secs(30 * u64::from(u32::MAX))),
        (
            Backoff::Exponential {
                factor: 2.0,
                cap: secs(300),
            },
            u32::MAX,
            secs(300),
        ),
        (
            Backoff::Exponential {
                factor: f64::NAN,
                cap: secs(300),
            },
            3,
            secs(300),
        ),
        (
            Backoff::Exponential {
                factor: 0.5,
                cap: secs(300),
            },
            3,
            base,
        ),
        (
            Backoff::Exponential {
                factor: -3.0,
                cap: secs(300),
            },
            2,
            secs(300),
        ),
        (
            Backoff::Exponential {
                factor: 2.0,
                cap: secs(10),
            },
            1,
            secs(10),
        ),
    ];
    for (backoff, opens, want) in table {
        assert_eq!(backoff.timeout(base, opens), want, "{backoff:?} × {opens}");
    }
}

#[test]
fn the_transition_carries_the_reset_timeout_of_the_open() {
    let mut b = opened(BreakerSettings::default());
    assert_eq!(
        b.last_transition().and_then(|t| t.reset_timeout),
        Some(secs(30))
    );
    b.poll(secs(30));
    let t = b.record(secs(31), F).expect("reopen");
    assert_eq!(t.reset_timeout, Some(secs(60)));
    assert_eq!(
        t.to_string(),
        "half_open → open: a trial failed (half-open in 60s)"
    );
}

#[test]
fn closing_resets_the_backoff() {
    let settings = BreakerSettings {
        backoff: Backoff::Linear,
        ..BreakerSettings::default()
    };
    let mut b = opened(settings);
    b.poll(secs(30));
    b.record(secs(30), F); // second open: 60 s
    assert_eq!((b.reset_timeout(), b.consecutive_opens()), (secs(60), 2));
    b.poll(secs(90));
    b.record(secs(91), S);
    assert_eq!(b.consecutive_opens(), 2, "not closed yet");
    assert_eq!(
        b.reset_timeout(),
        secs(90),
        "the next open would be the third"
    );
    b.record(secs(92), S);
    assert_eq!(b.state(), Closed);
    assert_eq!((b.consecutive_opens(), b.reset_timeout()), (0, secs(30)));
    // Trip again: back to the base.
    let t = feed(&mut b, secs(100), &[F; 5]);
    assert_eq!(t[0].reset_timeout, Some(secs(30)));
    assert_eq!(b.open_until(), Some(secs(104) + secs(30)));
    assert_eq!(b.opens(), 3);
}

#[test]
fn force_open_holds_until_reset() {
    // (state before, expected `from`, opens counted by the force)
    let table = [(Closed, 1), (Open, 0), (HalfOpen, 1)];
    for (before, opens_added) in table {
        let mut b = Breaker::new(BreakerSettings::default(), Duration::ZERO);
        if before != Closed {
            feed(&mut b, Duration::ZERO, &[F; 5]);
        }
        if before == HalfOpen {
            b.poll(secs(100));
        }
        assert_eq!(b.state(), before);
        let opens = b.opens();
        let since = b.since();
        let t = b.force_open(secs(200));
        assert_eq!((t.from, t.to), (before, Open));
        assert_eq!(
            (t.reason, t.reset_timeout),
            (TransitionReason::ForcedOpen, None)
        );
        assert_eq!(b.opens(), opens + opens_added);
        if before == Open {
            assert_eq!(b.since(), since, "still the same open");
        } else {
            assert_eq!(b.since(), secs(200));
        }
        assert!(b.is_forced());
        assert_eq!(b.open_until(), None);
        // Holds: no half-open on time, outcomes ignored, no trials.
        for at in [secs(230), secs(10_000), Duration::MAX] {
            assert_eq!(b.poll(at), None);
            assert_eq!(b.record(at, S), None);
            assert!(!b.try_admit_trial(at));
            assert_eq!((b.state(), b.gate()), (Open, GateState::Open));
        }
        let t = b.reset(Duration::MAX);
        assert_eq!(
            (t.from, t.to, t.reason),
            (Open, Closed, TransitionReason::ManualReset)
        );
        assert!(!b.is_forced());
        assert_eq!(b.gate(), GateState::Closed);
    }
}

#[test]
fn forcing_keeps_the_backoff_step() {
    let mut b = opened(BreakerSettings::default());
    b.poll(secs(30));
    b.record(secs(30), F);
    assert_eq!(b.consecutive_opens(), 2);
    b.force_open(secs(40));
    assert_eq!(b.consecutive_opens(), 2);
    assert_eq!(
        b.reset_timeout(),
        secs(120),
        "what the next automatic open would get"
    );
}

#[test]
fn reset_clears_windows_and_backoff_from_every_state() {
    // (state before reset, expected `from`)
    for before in [Closed, Open, HalfOpen] {
        let settings = BreakerSettings {
            min_requests: 100,
            ..BreakerSettings::default()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        feed(&mut b, Duration::ZERO, &[F, F, S, F, F, F, F, F]); // opens at the 8th
        if before == HalfOpen {
            b.poll(secs(100));
            b.record(secs(100), F); // second open
            b.poll(secs(200));
            b.record(secs(200), S);
        }
        if before == Closed {
            b.reset(secs(10));
            feed(&mut b, secs(10), &[F, F, S, F, F]);
            assert_eq!(b.stats(secs(15)).requests, 5);
        }
        assert_eq!(b.state(), before);
        let t = b.reset(secs(300));
        assert_eq!(
            (t.from, t.to, t.reason),
            (before, Closed, TransitionReason::ManualReset)
        );
        assert_eq!(b.state(), Closed);
        assert_eq!(b.stats(secs(300)), WindowStats::default());
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.half_open_successes(), 0);
        assert_eq!(b.consecutive_opens(), 0);
        assert_eq!(b.reset_timeout(), secs(30));
        // A streak has to start over: four failures are not enough.
        feed(&mut b, secs(300), &[F, F, F, F]);
        assert_eq!(b.state(), Closed, "reset from {before:?}");
        b.record(secs(310), F);
        assert_eq!(b.state(), Open);
        assert_eq!(b.reset_timeout(), secs(30));
    }
}

#[test]
fn counters_and_time_in_state() {
    let mut b = Breaker::new(BreakerSettings::default(), secs(10));
    feed(&mut b, secs(10), &[F; 5]); // open at 14
    assert_eq!((b.state(), b.since()), (Open, secs(14)));
    assert_eq!(b.time_in_state(secs(20)), secs(6));
    b.poll(secs(44)); // half-open
    b.record(secs(45), S);
    b.record(secs(46), S); // closed
    b.force_open(secs(50));
    b.reset(secs(60));
    b.reset(secs(61)); // an operator action on record, state unchanged
    assert_eq!(b.transitions(), 6);
    assert_eq!(b.opens(), 2);
    assert_eq!(b.since(), secs(60), "a no-op reset keeps the time in state");
    assert_eq!(b.time_in_state(secs(70)), secs(10));
    assert_eq!(b.time_in_state(secs(0)), Duration::ZERO);
}

#[test]
fn time_going_backwards_is_held_at_the_latest_seen() {
    let mut b = Breaker::new(BreakerSettings::default(), secs(100));
    feed(&mut b, secs(100), &[F; 5]); // open at 104, until 134
    assert_eq!(b.poll(secs(50)), None);
    assert_eq!(b.record(secs(1), S), None);
    assert_eq!(b.last_outcome(), Some((secs(104), S)));
    let t = b.poll(secs(134)).expect("half-open");
    assert_eq!(t.at, secs(134));
    assert!(b.try_admit_trial(secs(0)));
}

#[test]
fn snapshot_reports_everything() {
    let mut b = Breaker::new(BreakerSettings::default(), Duration::ZERO);
    feed(&mut b, Duration::ZERO, &[S, F, F]);
    let s = b.snapshot(secs(12));
    assert_eq!(s.state, Closed);
    assert_eq!((s.window_requests, s.window_failures), (3, 2));
    assert!((s.error_rate_ratio - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(s.consecutive_failures, 2);
    assert_eq!(s.last_outcome, Some(F));
    assert_eq!(s.last_outcome_age_seconds, Some(10.0));
    assert_eq!(s.time_in_state_seconds, 12.0);
    assert_eq!(s.half_open_in_seconds, None);
    assert_eq!(s.last_reason, None);

    feed(&mut b, secs(3), &[F, F, F]);
    let s = b.snapshot(secs(15));
    assert_eq!(s.state, Open);
    assert_eq!(s.half_open_in_seconds, Some(20.0));
    assert_eq!(s.reset_timeout_seconds, 30.0);
    assert_eq!(
        (s.opens_total, s.transitions_total, s.consecutive_opens),
        (1, 1, 1)
    );
    assert_eq!(
        s.last_reason,
        Some(TransitionReason::ConsecutiveFailures { failures: 5 })
    );
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(json["state"], "open");
    assert_eq!(json["last_reason"]["consecutive_failures"]["failures"], 5);
}

#[test]
fn reconfigure_keeps_state_and_reshapes_the_window() {
    let mut b = Breaker::new(rate_only(), Duration::ZERO);
    feed(&mut b, Duration::ZERO, &[S, F, S, F]);
    // Same kind, shorter: outcomes kept.
    b.reconfigure(BreakerSettings {
        window: Window::Time(secs(10)),
        ..rate_only()
    });
    assert_eq!(b.stats(secs(4)).requests, 4);
    // Time → count: dropped.
    b.reconfigure(BreakerSettings {
        window: Window::Count(3),
        ..rate_only()
    });
    assert_eq!(b.stats(secs(4)).requests, 0);
    feed(&mut b, secs(10), &[F, S, S]);
    // Smaller count: newest kept.
    b.reconfigure(BreakerSettings {
        window: Window::Count(2),
        min_requests: 2,
        ..rate_only()
    });
    assert_eq!(
        b.stats(secs(20)),
        WindowStats {
            requests: 2,
            failures: 0
        }
    );
    assert_eq!(b.record(secs(20), F).map(|t| t.to), Some(Open));
    // While open: the deadline of this open stays; the half-open budget follows at once.
    let until = b.open_until();
    b.reconfigure(BreakerSettings {
        reset_timeout: secs(5),
        half_open_trials: 7,
        ..rate_only()
    });
    assert_eq!(b.open_until(), until);
    b.poll(until.expect("open"));
    assert_eq!(
        b.gate(),
        GateState::HalfOpen {
            trials_per_interval: 7,
            interval: secs(1)
        }
    );
}

#[test]
fn group_presets_override_the_defaults() {
    // (group, expected error_threshold, reset_timeout)
    let table = [
        ("critical", Some((0.7, secs(15)))),
        ("non_critical", Some((0.5, secs(30)))),
        ("batch", None),
        ("", None),
    ];
    for (group, want) in table {
        let got = BreakerSettings::for_group(group);
        match want {
            Some((threshold, timeout)) => {
                let s = got.expect("a preset");
                assert_eq!((s.error_threshold, s.reset_timeout), (threshold, timeout));
                // Everything else is the default.
                let rest = BreakerSettings {
                    error_threshold: 0.5,
                    reset_timeout: secs(30),
                    ..s
                };
                assert_eq!(rest, BreakerSettings::default());
                assert_eq!(s.validate(), Ok(()));
            }
            None => assert_eq!(got, None, "{group}"),
        }
    }
    assert!(
        GROUP_PRESETS
            .iter()
            .all(|g| BreakerSettings::for_group(g).is_some())
    );
}

#[test]
fn resolve_layers_defaults_preset_and_overrides() {
    let defaults = BreakerSettings {
        min_requests: 20,
        error_threshold: 0.3,
        ..BreakerSettings::default()
    };
    let overrides = BreakerOverrides {
        reset_timeout: Some(secs(5)),
        backoff: Some(Backoff::Linear),
        ..BreakerOverrides::default()
    };
    // (group, overrides, expected threshold, reset timeout, min_requests, backoff)
    let table = [
        ("critical", None, 0.7, secs(15), 20, defaults.backoff),
        (
            "critical",
            Some(&overrides),
            0.7,
            secs(5),
            20,
            Backoff::Linear,
        ),
        ("batch", None, 0.3, secs(30), 20, defaults.backoff),
        ("batch", Some(&overrides), 0.3, secs(5), 20, Backoff::Linear),
        ("non_critical", None, 0.5, secs(30), 20, defaults.backoff),
    ];
    for (group, o, threshold, timeout, min, backoff) in table {
        let s = defaults.resolve(group, o);
        assert_eq!(
            (
                s.error_threshold,
                s.reset_timeout,
                s.min_requests,
                s.backoff
            ),
            (threshold, timeout, min, backoff),
            "{group} {o:?}"
        );
    }
}

#[test]
fn validate_names_the_key_at_fault() {
    fn with(change: impl FnOnce(&mut BreakerSettings)) -> BreakerSettings {
        let mut s = BreakerSettings::default();
        change(&mut s);
        s
    }
    let exp = |factor, cap| Backoff::Exponential { factor, cap };
    // (settings, expected key, message fragment)
    let table = [
        (
            with(|s| s.error_threshold = 0.0),
            "error_threshold",
            "must be in (0, 1], got 0",
        ),
        (
            with(|s| s.error_threshold = 1.5),
            "error_threshold",
            "must be in (0, 1], got 1.5",
        ),
        (
            with(|s| s.error_threshold = -0.1),
            "error_threshold",
            "(0, 1]",
        ),
        (
            with(|s| s.error_threshold = f64::NAN),
            "error_threshold",
            "(0, 1]",
        ),
        (with(|s| s.min_requests = 0), "min_requests", "at least 1"),
        (
            with(|s| s.window = Window::Count(0)),
            "window",
            "1 to 10000",
        ),
        (
            with(|s| s.window = Window::Count(10_001)),
            "window",
            "1 to 10000",
        ),
        (
            with(|s| s.window = Window::Count(5)),
            "min_requests",
            "exceeds the count window of 5",
        ),
        (
            with(|s| s.window = Window::Time(ms(999))),
            "window",
            "1s to 3600s, got 0.999s",
        ),
        (
            with(|s| s.window = Window::Time(secs(3601))),
            "window",
            "1s to 3600s",
        ),
        (
            with(|s| s.reset_timeout = Duration::ZERO),
            "reset_timeout",
            "more than 0",
        ),
        (
            with(|s| (s.reset_timeout, s.backoff) = (secs(86_401), Backoff::Linear)),
            "reset_timeout",
            "at most 86400s",
        ),
        (
            with(|s| s.backoff = exp(0.5, secs(300))),
            "backoff_factor",
            "at least 1, got 0.5",
        ),
        (
            with(|s| s.backoff = exp(f64::INFINITY, secs(300))),
            "backoff_factor",
            "at least 1",
        ),
        (
            with(|s| s.backoff = exp(2.0, secs(10))),
            "backoff_cap",
            "between reset_timeout (30s)",
        ),
        (
            with(|s| s.backoff = exp(2.0, secs(86_401))),
            "backoff_cap",
            "86400s",
        ),
        (
            with(|s| s.half_open_trials = 0),
            "half_open_trials",
            "at least 1",
        ),
        (
            with(|s| s.half_open_interval = Duration::ZERO),
            "half_open_interval",
            "more than 0",
        ),
        (
            with(|s| s.half_open_interval = secs(3601)),
            "half_open_interval",
            "at most 3600s",
        ),
        (
            with(|s| s.success_threshold = 0),
            "success_threshold",
            "at least 1",
        ),
    ];
    for (settings, key, fragment) in table {
        let errors = settings.validate().expect_err(key);
        assert_eq!(errors.len(), 1, "{key}: {errors:?}");
        assert_eq!(errors[0].key, key);
        assert!(
            errors[0].message.contains(fragment),
            "{key}: {}",
            errors[0].message
        );
        assert!(errors[0].to_string().starts_with(&format!("{key}: ")));
    }
    // Valid edges.
    let ok = [
        with(|s| s.error_threshold = 1.0),
        with(|s| s.window = Window::Count(10)),
        with(|s| s.window = Window::Time(secs(1))),
        with(|s| s.window = Window::Time(secs(3600))),
        with(|s| s.consecutive_failures = 0),
        with(|s| s.backoff = exp(1.0, secs(30))),
        with(|s| s.backoff = Backoff::Immediate),
    ];
    for s in ok {
        assert_eq!(s.validate(), Ok(()), "{s:?}");
    }
    // Every problem at once, in a stable order.
    let bad = with(|s| (s.error_threshold, s.min_requests, s.success_threshold) = (2.0, 0, 0));
    let keys: Vec<_> = bad
        .validate()
        .expect_err("invalid")
        .iter()
        .map(|e| e.key.clone())
        .collect();
    assert_eq!(
        keys,
        ["error_threshold", "min_requests", "success_threshold"]
    );
}

#[test]
fn names_and_serde_shapes() {
    for (state, name) in [(Closed, "closed"), (Open, "open"), (HalfOpen, "half_open")] {
        assert_eq!(state.as_str(), name);
        assert_eq!(state.to_string(), name);
        assert_eq!(serde_json::to_value(state).expect("json"), name);
        let back: BreakerState = serde_json::from_value(name.into()).expect("json");
        assert_eq!(back, state);
    }
    assert_eq!(
        BreakerState::ALL.map(BreakerState::as_str),
        ["closed", "open", "half_open"]
    );
    assert_eq!((S.as_str(), F.as_str()), ("success", "failure"));
    let gates = [
        (GateState::Closed, Gate::Closed),
        (GateState::Open, Gate::Open),
        (
            GateState::HalfOpen {
                trials_per_interval: 3,
                interval: secs(1),
            },
            Gate::HalfOpen,
        ),
    ];
    for (state, gate) in gates {
        assert_eq!(state.kernel_gate(), gate);
    }
    let reasons = [
        (
            TransitionReason::ErrorRate {
                rate: 0.6,
                requests: 10,
            },
            "error_rate",
            "error rate 60% over 10 requests",
        ),
        (
            TransitionReason::ConsecutiveFailures { failures: 5 },
            "consecutive_failures",
            "5 consecutive failures",
        ),
        (
            TransitionReason::ResetTimeout,
            "reset_timeout",
            "reset timeout elapsed",
        ),
        (
            TransitionReason::TrialSucceeded,
            "trial_succeeded",
            "trials succeeded",
        ),
        (
            TransitionReason::TrialFailed,
            "trial_failed",
            "a trial failed",
        ),
        (TransitionReason::ForcedOpen, "forced_open", "forced open"),
        (
            TransitionReason::ManualReset,
            "manual_reset",
            "manual reset",
        ),
    ];
    for (reason, name, text) in reasons {
        assert_eq!((reason.as_str(), reason.to_string().as_str()), (name, text));
    }
    assert_eq!(
        [
            Backoff::Immediate,
            Backoff::Linear,
            BreakerSettings::default().backoff
        ]
        .map(|b| b.as_str()),
        ["immediate", "linear", "exponential"]
    );
}

#[test]
fn settings_deserialize_strictly() {
    let s: BreakerSettings =
        toml::from_str("error_threshold = 0.7\nwindow = { count = 20 }\nbackoff = \"linear\"\n")
            .expect("parses");
    assert_eq!(
        s,
        BreakerSettings {
            error_threshold: 0.7,
            window: Window::Count(20),
            backoff: Backoff::Linear,
            ..BreakerSettings::default()
        }
    );
    let s: BreakerSettings = toml::from_str(
        "backoff = { exponential = { factor = 3.0, cap = { secs = 600, nanos = 0 } } }\n",
    )
    .expect("parses");
    assert_eq!(
        s.backoff,
        Backoff::Exponential {
            factor: 3.0,
            cap: secs(600)
        }
    );
    let o: BreakerOverrides =
        toml::from_str("reset_timeout = { secs = 15, nanos = 0 }\n").expect("parses");
    assert_eq!(o.apply(&BreakerSettings::default()).reset_timeout, secs(15));
    for text in [
        "error_treshold = 0.5\n",
        "backoff = \"fibonacci\"\n",
        "window = { requests = 20 }\n",
    ] {
        assert!(toml::from_str::<BreakerSettings>(text).is_err(), "{text}");
        assert!(toml::from_str::<BreakerOverrides>(text).is_err(), "{text}");
    }
}
