"""Domain-shift detection (eval/shift_detector.py): the step at which a jump fires, silence on constant
and noisy-constant signals, the refractory period, the training policy and the detection scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pretrainlab.eval.shift_detector import (
    DomainChange,
    ShiftDetector,
    ShiftDetectorConfig,
    mean_confidence,
    score_detections,
    should_train,
    source_disagreement,
)


def run(detector: ShiftDetector, signal: np.ndarray | list[float], start: int = 0) -> list[DomainChange]:
    """Feed `signal[i]` as step start + i; the events fired."""
    events = [detector.update(start + i, float(value)) for i, value in enumerate(signal)]
    return [event for event in events if event is not None]


def piecewise(levels: list[float], length: int) -> np.ndarray:
    return np.repeat(np.asarray(levels, dtype=np.float64), length)


def test_a_step_fires_once_at_the_first_step_beyond_the_threshold() -> None:
    # Δ = −0.3, window 20, threshold 0.1: the first k with k · 0.3 / 20 > 0.1 is k = 7 -> step 200 + 6
    detector = ShiftDetector(ShiftDetectorConfig(window=20, threshold=0.1))
    events = run(detector, np.concatenate([np.full(200, 0.8), np.full(400, 0.5)]))
    assert [event.step for event in events] == [206]
    assert events[0].signal_before == pytest.approx(0.8, abs=1e-12)
    assert events[0].signal_after == pytest.approx(0.8 - 7 * 0.3 / 20, abs=1e-12)
    assert detector.events == events


def test_a_noisy_step_fires_within_window_steps_of_the_boundary() -> None:
    rng = np.random.default_rng(0)
    signal = piecewise([0.9, 0.6, 0.9, 0.6], 300) + rng.normal(0.0, 0.02, 1200)
    window = 75
    events = run(ShiftDetector(ShiftDetectorConfig(window=window, threshold=0.1)), signal)
    assert len(events) == 3
    for event, boundary in zip(events, [300, 600, 900]):
        assert boundary <= event.step < boundary + window
        assert abs(event.signal_after - event.signal_before) > 0.1


def test_constant_and_noisy_constant_signals_never_fire() -> None:
    rng = np.random.default_rng(1)
    config = ShiftDetectorConfig(window=75, threshold=0.05)
    assert run(ShiftDetector(config), np.full(2000, 0.8)) == []
    # noise std 0.02: the difference of two window means has std 0.02 · √(2/75) ≈ 0.0033, far below 0.05
    assert run(ShiftDetector(config), 0.8 + rng.normal(0.0, 0.02, 2000)) == []
    relative = ShiftDetectorConfig(window=75, threshold=0.05, measure="relative")
    assert run(ShiftDetector(relative), 0.8 + rng.normal(0.0, 0.02, 2000)) == []


def test_no_event_before_two_fresh_windows_after_the_last_one() -> None:
    # window 10, threshold 0.5: 0 -> 1 at step 100 fires at 105 (k = 6); 1 -> 3 at step 110 comes during
    # the refractory period and fires only at 125, when steps 106-125 fill both windows:
    # reference 106-115 = four 1s and six 3s (mean 2.2), recent 116-125 = 3
    detector = ShiftDetector(ShiftDetectorConfig(window=10, threshold=0.5))
    signal = np.concatenate([np.zeros(100), np.ones(10), np.full(40, 3.0)])
    events = run(detector, signal)
    assert [event.step for event in events] == [105, 125]
    assert (events[1].signal_before, events[1].signal_after) == pytest.approx((2.2, 3.0), abs=1e-12)


def test_relative_and_absolute_jumps() -> None:
    signal = np.concatenate([np.full(20, 2.0), np.full(20, 2.5)])  # step at 20, Δ = 0.5 on a level of 2
    # absolute: k · 0.05 > 0.22 first for k = 5; relative: k · 0.05 / 2 > 0.22 first for k = 9
    absolute = run(ShiftDetector(ShiftDetectorConfig(window=10, threshold=0.22)), signal)
    relative = run(ShiftDetector(ShiftDetectorConfig(window=10, threshold=0.22, measure="relative")), signal)
    assert [event.step for event in absolute] == [24]
    assert [event.step for event in relative] == [28]
    from_zero = run(ShiftDetector(ShiftDetectorConfig(window=2, threshold=10.0, measure="relative")), [0, 0, 0, 1e-9])
    assert [event.step for event in from_zero] == [3]  # any change of a zero mean is an infinite relative jump


def test_resumed_detector_continues_as_if_never_stopped() -> None:
    rng = np.random.default_rng(2)
    signal = piecewise([0.2, 0.5, 0.1], 100) + rng.normal(0.0, 0.01, 300)
    config = ShiftDetectorConfig(window=15, threshold=0.1)
    uninterrupted = run(ShiftDetector(config), signal)
    first = ShiftDetector(config)
    run(first, signal[:110])
    resumed = ShiftDetector(config)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    run(resumed, signal[110:], start=110)
    assert len(uninterrupted) == 2
    assert resumed.events == uninterrupted


def test_bad_updates_raise() -> None:
    detector = ShiftDetector(ShiftDetectorConfig(window=3, threshold=0.1))
    detector.update(5, 0.5)
    with pytest.raises(ValueError, match="step 5 does not follow the last step 5"):
        detector.update(5, 0.5)
    with pytest.raises(ValueError, match="step 6 is not finite"):
        detector.update(6, math.nan)
    with pytest.raises(ValueError, match="more than 2 · window = 6"):
        detector.load_state_dict({"values": [0.0] * 7, "last_step": 6, "events": []})


def test_after_change_policy_trains_for_the_budget_after_each_change() -> None:
    events = [DomainChange(20, 0.8, 0.5), DomainChange(23, 0.5, 0.9), DomainChange(40, 0.9, 0.2)]
    trains = [step for step in range(40) if should_train(step, events, "after_change", 5)]
    assert trains == [0, 1, 2, 3, 4, *range(21, 29)]  # start: 0-4; change at 20: 21-25, at 23: 24-28
    assert not should_train(0, events, "after_change", 5, first_step_trains=False)
    assert should_train(41, events, "after_change", 5)
    assert all(should_train(step, [], "always", 5) for step in range(40))


def test_policy_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="train_steps_after_change must be >= 1"):
        should_train(3, [], "after_change", 0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        should_train(-1, [], "always", 5)
    with pytest.raises(ValueError, match="unknown policy 'sometimes'"):
        should_train(3, [], "sometimes", 5)  # type: ignore[arg-type]


def test_scores_of_a_constructed_case() -> None:
    # boundaries 100 / 200 / 300, window 20: 50 is before any boundary; 105 detects 100 (delay 5); 112 is a
    # second event after 100; nothing in [200, 300); 330 is 300's first event but 30 > 20 steps late; 345 a second
    scores = score_detections([345, 50, 105, 112, 330], [100, 200, 300], window=20)
    assert scores == {
        "delays": [5, None, 30],
        "missed": 1,
        "mean_delay": 17.5,
        "false_alarm_steps": [50, 112, 330, 345],
        "false_alarms": 4,
    }
    perfect = score_detections([110, 220], [100, 200], window=20)  # a delay of exactly `window` is in time
    assert (perfect["delays"], perfect["false_alarms"], perfect["missed"]) == ([10, 20], 0, 0)
    nothing = score_detections([], [100], window=20)
    assert (nothing["delays"], nothing["mean_delay"], nothing["false_alarms"]) == ([None], None, 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        score_detections([], [100, 100], window=20)


def test_detector_on_a_domain_sequence_scores_no_miss_and_no_false_alarm() -> None:
    rng = np.random.default_rng(3)
    levels = [0.9, 0.8, 0.65, 0.5, 0.65, 0.8, 0.9]  # confidence falling with the rain rate, then rising
    length, window = 200, 30
    signal = piecewise(levels, length) + rng.normal(0.0, 0.01, length * len(levels))
    events = run(ShiftDetector(ShiftDetectorConfig(window=window, threshold=0.08)), signal)
    scores = score_detections([e.step for e in events], [length * i for i in range(1, len(levels))], window)
    assert scores["missed"] == 0 and scores["false_alarms"] == 0
    assert all(delay < window for delay in scores["delays"])


def test_signals_by_hand() -> None:
    uniform = torch.zeros(1, 4, 2, 2)
    assert mean_confidence(uniform).item() == pytest.approx(0.25)
    quarter = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).expand(2, 2, 1, 2)  # softmax (1/4, 3/4)
    assert mean_confidence(quarter).item() == pytest.approx(0.75)
    labels = torch.tensor([[[1, 1]], [[0, 0]]])  # agrees on image 0 (CE −ln ¾), disagrees on 1 (CE ln 4)
    expected = (-math.log(0.75) + math.log(4.0)) / 2
    assert source_disagreement(quarter, labels).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="labels"):
        source_disagreement(quarter, labels[:, 0])


def test_config_defaults_and_validation() -> None:
    config = ShiftDetectorConfig()
    assert (config.signal, config.window, config.threshold, config.measure) == (
        "source_disagreement", 75, 0.23, "absolute"
    )  # fmt: skip
    assert (config.policy, config.train_steps_after_change) == ("always", 750)
    for bad in ({"signal": "entropy"}, {"window": 0}, {"threshold": 0.0}, {"train_steps_after_change": 0},
                {"policy": "never"}, {"windw": 75}):  # fmt: skip
        with pytest.raises(ValidationError):
            ShiftDetectorConfig.model_validate(bad)
