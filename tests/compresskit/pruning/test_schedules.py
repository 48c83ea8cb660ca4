from __future__ import annotations

import pytest

from compresskit.pruning.schedules import SCHEDULES, constant, join, linear, make_schedule, polynomial

# --- exact values -----------------------------------------------------------


def test_polynomial_agp_exact_values_at_boundaries_and_midpoint():
    schedule = polynomial(0.0, 0.5, start=0, end=4)
    assert schedule(0) == 0.0
    # 0.5 + (0 - 0.5) * (1 - 1/4)**3 = 0.5 - 0.5 * 27/64
    assert schedule(1) == pytest.approx(0.5 - 0.5 * 27 / 64)
    assert schedule(2) == pytest.approx(0.4375)  # 0.5 - 0.5 * (1/2)**3
    assert schedule(3) == pytest.approx(0.5 - 0.5 / 64)
    assert schedule(4) == 0.5


def test_polynomial_with_offset_start_and_nonzero_initial():
    schedule = polynomial(0.1, 0.7, start=2, end=6, power=2)
    assert schedule(2) == 0.1
    # 0.7 + (0.1 - 0.7) * (1 - 2/4)**2 = 0.7 - 0.6 * 0.25
    assert schedule(4) == pytest.approx(0.55)
    assert schedule(6) == 0.7


def test_polynomial_clamps_outside_ramp():
    schedule = polynomial(0.2, 0.6, start=3, end=5)
    assert [schedule(t) for t in (-1, 0, 2, 3)] == [0.2, 0.2, 0.2, 0.2]
    assert [schedule(t) for t in (5, 6, 100)] == [0.6, 0.6, 0.6]


def test_polynomial_is_monotone_for_increasing_rate():
    schedule = polynomial(0.0, 0.8, start=0, end=10)
    values = [schedule(t) for t in range(12)]
    assert values == sorted(values)


def test_polynomial_can_decrease():
    schedule = polynomial(0.5, 0.1, start=0, end=2, power=1)
    assert schedule(1) == pytest.approx(0.3)


def test_linear_midpoints():
    schedule = linear(0.0, 0.4, start=1, end=5)
    assert schedule(1) == 0.0
    assert schedule(2) == pytest.approx(0.1)
    assert schedule(3) == pytest.approx(0.2)
    assert schedule(5) == 0.4
    assert schedule(9) == 0.4


def test_constant():
    schedule = constant(0.3)
    assert [schedule(t) for t in (0, 7, 1000)] == [0.3, 0.3, 0.3]


# --- join ---------------------------------------------------------------------


def test_join_calls_later_schedules_with_shifted_epoch():
    schedule = join([constant(0.0), linear(0.0, 0.4, 0, 4), constant(0.5)], [2, 6])
    assert schedule(0) == 0.0
    assert schedule(1) == 0.0
    assert schedule(2) == 0.0  # second schedule at its own epoch 0
    assert schedule(3) == pytest.approx(0.1)  # linear(...)(1)
    assert schedule(5) == pytest.approx(0.3)  # linear(...)(3)
    assert schedule(6) == 0.5
    assert schedule(50) == 0.5


def test_join_single_schedule_is_identity():
    inner = polynomial(0.0, 0.5, 0, 4)
    schedule = join([inner], [])
    assert [schedule(t) for t in range(6)] == [inner(t) for t in range(6)]


def test_join_records_call_arguments():
    calls: list[int] = []

    def spy(epoch: int) -> float:
        calls.append(epoch)
        return 0.0

    join([constant(0.1), spy], [3])(7)
    assert calls == [4]


@pytest.mark.parametrize(
    "schedules, boundaries, match",
    [
        ([], [], r"at least one schedule"),
        ([constant(0.1), constant(0.2)], [], r"1 boundaries, got 0"),
        ([constant(0.1)], [2], r"0 boundaries, got 1"),
        ([constant(0.1)] * 3, [4, 4], r"strictly increasing, got \[4, 4\]"),
        ([constant(0.1)] * 2, [-1], r"boundaries\[0\] must be >= 0, got -1"),
    ],
)
def test_join_errors(schedules, boundaries, match):
    with pytest.raises(ValueError, match=match):
        join(schedules, boundaries)


# --- validation and lookup ----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(initial=-0.1, final=0.5, start=0, end=4), r"initial must be in \[0, 1\), got -0.1"),
        (dict(initial=0.0, final=1.0, start=0, end=4), r"final must be in \[0, 1\), got 1.0"),
        (dict(initial=0.0, final=0.5, start=4, end=4), r"start=4, end=4"),
        (dict(initial=0.0, final=0.5, start=5, end=2), r"start=5, end=2"),
        (dict(initial=0.0, final=0.5, start=0, end=4, power=0), r"power .* got 0"),
        (dict(initial=0.0, final=0.5, start=0, end=4, power=-2.0), r"power .* got -2.0"),
        (dict(initial=0.0, final=0.5, start=-1, end=4), r"start must be >= 0, got -1"),
        (dict(initial="0.1", final=0.5, start=0, end=4), r"initial must be a number"),
        (dict(initial=0.0, final=0.5, start=0, end=2.5), r"end must be an int epoch, got 2.5"),
    ],
)
def test_polynomial_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        polynomial(**kwargs)


def test_constant_rejects_rate_of_one():
    with pytest.raises(ValueError, match=r"value must be in \[0, 1\), got 1"):
        constant(1)


def test_make_schedule_builds_by_name():
    assert set(SCHEDULES) == {"polynomial", "linear", "constant"}
    schedule = make_schedule("polynomial", initial=0.0, final=0.5, start=0, end=4)
    assert schedule(2) == pytest.approx(0.4375)
    assert make_schedule("linear", initial=0.0, final=0.4, start=0, end=4)(1) == pytest.approx(0.1)
    assert make_schedule("constant", value=0.25)(9) == 0.25


def test_make_schedule_unknown_name_lists_valid_names():
    with pytest.raises(
        ValueError,
        match=r"unknown schedule 'cosine'; valid: \['constant', 'linear', 'polynomial'\]",
    ):
        make_schedule("cosine", value=0.1)


def test_make_schedule_bad_keyword_is_value_error():
    with pytest.raises(ValueError, match=r"bad arguments for schedule 'constant'.*rate"):
        make_schedule("constant", rate=0.1)
