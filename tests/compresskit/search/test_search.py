from __future__ import annotations

import json

import pytest

from compresskit.search.bayesian import SearchResult, Trial, random_search, search_rates

BOUNDS = {"a": (0.0, 0.9), "b": (0.0, 0.9), "c": (0.0, 0.9)}
BUDGET = (1800, 2200)
# brute force on a 0.01 grid over the feasible set (see _brute_force_optimum)
OPTIMUM = 0.0398


def _objective(rates: dict[str, float]) -> float:
    a, b, c = rates["a"], rates["b"], rates["c"]
    return (a - 0.3) ** 2 + 2 * (b - 0.5) ** 2 + 0.5 * (c - 0.1) ** 2 + 0.3 * a * b


def _predict_params(rates: dict[str, float]) -> int:
    # a parameter-count-like function: fewer parameters the more each group is pruned
    return int(1000 * (1 - rates["a"]) + 2000 * (1 - rates["b"]) + 500 * (1 - rates["c"]))


class _Recording:
    """Objective wrapper that records calls and checks feasibility of each."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[dict[str, float]] = []
        self.fail_at = fail_at

    def __call__(self, rates):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("simulated crash")
        params = _predict_params(rates)
        assert BUDGET[0] <= params <= BUDGET[1], f"infeasible candidate evaluated: {rates} -> {params}"
        for name, (lo, hi) in BOUNDS.items():
            assert lo <= rates[name] <= hi
        self.calls.append(dict(rates))
        return _objective(rates)


def _search(objective, **kwargs) -> SearchResult:
    kwargs = {"iterations": 9, "initial_points": 6, "seed": 0, "raw_samples": 256, "progress": False} | kwargs
    return search_rates(objective, BOUNDS, _predict_params, BUDGET, **kwargs)


def test_brute_force_optimum_constant():
    steps = [i / 100 for i in range(91)]
    best = min(
        _objective({"a": a, "b": b, "c": c})
        for a in steps for b in steps for c in steps[::3]
        if BUDGET[0] <= _predict_params({"a": a, "b": b, "c": c}) <= BUDGET[1]
    )
    assert best == pytest.approx(OPTIMUM, abs=1e-3)


@pytest.mark.slow
def test_bo_finds_near_optimum_and_beats_the_worst_random_seed():
    recording = _Recording()
    result = _search(recording)
    assert len(recording.calls) == 15 == len(result.trials)  # every call feasible (asserted inside)
    assert [t.kind for t in result.trials] == ["sobol"] * 6 + ["bo"] * 9
    assert result.best_objective == min(t.objective for t in result.trials)
    assert result.best_rates == min(result.trials, key=lambda t: t.objective).rates
    random_bests = [
        random_search(_Recording(), BOUNDS, _predict_params, BUDGET, iterations=9, initial_points=6,
                      seed=seed, progress=False).best_objective
        for seed in range(5)
    ]
    # measured: BO regret ~2e-3 (seed 0); random regrets 0.017-0.061 over seeds 0-4
    assert result.best_objective - OPTIMUM < 0.01
    assert result.best_objective < max(random_bests)
    assert result.best_objective < sorted(random_bests)[2]  # better than the random median too
    for trial in result.trials:
        assert BUDGET[0] <= trial.predicted_params <= BUDGET[1]
        assert trial.predicted_params == _predict_params(trial.rates)


@pytest.mark.slow
def test_same_seed_same_trials_and_resume_matches_uninterrupted(tmp_path):
    straight = _search(_Recording(), iterations=4)
    again = _search(_Recording(), iterations=4)
    assert [t.rates for t in again.trials] == [t.rates for t in straight.trials]

    path = tmp_path / "history.json"
    crashing = _Recording(fail_at=8)  # dies during the 3rd BO trial
    with pytest.raises(KeyboardInterrupt):
        _search(crashing, iterations=4, history_path=path)
    saved = json.loads(path.read_text())
    assert len(saved["trials"]) == 8 and saved["seed"] == 0

    resumed_calls = _Recording()
    resumed = _search(resumed_calls, iterations=4, history_path=path)
    assert len(resumed_calls.calls) == 2  # the 8 stored trials were not re-evaluated
    assert [t.rates for t in resumed.trials] == [t.rates for t in straight.trials]
    assert [t.objective for t in resumed.trials] == [t.objective for t in straight.trials]
    assert resumed.best_objective == straight.best_objective
    assert len(json.loads(path.read_text())["trials"]) == 10


def test_resume_with_other_settings_raises(tmp_path):
    path = tmp_path / "history.json"
    random_search(_Recording(), BOUNDS, _predict_params, BUDGET, iterations=0, initial_points=2,
                  history_path=path, progress=False)
    with pytest.raises(ValueError, match="cannot resume, seed is 0 in the history but 1 now"):
        random_search(_Recording(), BOUNDS, _predict_params, BUDGET, iterations=0, initial_points=2,
                      seed=1, history_path=path, progress=False)
    with pytest.raises(ValueError, match="cannot resume, method"):
        search_rates(_Recording(), BOUNDS, _predict_params, BUDGET, iterations=0, initial_points=2,
                     history_path=path, progress=False)


def test_random_search_is_feasible_and_deterministic():
    first = random_search(_Recording(), BOUNDS, _predict_params, BUDGET, iterations=10, seed=3, progress=False)
    second = random_search(_Recording(), BOUNDS, _predict_params, BUDGET, iterations=10, seed=3, progress=False)
    assert len(first.trials) == 16  # default initial_points = max(4, 2 * 3)
    assert {t.kind for t in first.trials} == {"random"}
    assert first.trials == [
        Trial(t.rates, t.predicted_params, t.objective, first.trials[i].seconds, t.kind,
              first.trials[i].overhead_seconds)
        for i, t in enumerate(second.trials)
    ]


def test_unreachable_budget_names_achievable_range():
    with pytest.raises(ValueError, match=r"budget \[10, 20\].*all rates at their lower bounds: 3500, "
                                         r"at their upper bounds: 3(49|50)\)"):
        search_rates(_Recording(), BOUNDS, _predict_params, (10, 20), progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bounds": {"a": (0.5, 0.2)}}, r"bounds\['a'\] must satisfy 0 <= lo < hi < 1"),
        ({"bounds": {"a": (0.0, 1.0)}}, r"bounds\['a'\]"),
        ({"bounds": {}}, "non-empty"),
        ({"budget": (300, 100)}, "budget"),
        ({"iterations": -1}, "iterations"),
        ({"initial_points": 1}, "initial_points"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    arguments = {"bounds": BOUNDS, "budget": BUDGET} | kwargs
    with pytest.raises(ValueError, match=match):
        search_rates(_objective, arguments["bounds"], _predict_params, arguments["budget"],
                     iterations=kwargs.get("iterations", 1), initial_points=kwargs.get("initial_points"),
                     progress=False)


def test_non_finite_objective_raises_with_rates():
    with pytest.raises(ValueError, match="objective returned nan for rates"):
        search_rates(lambda rates: float("nan"), BOUNDS, _predict_params, BUDGET, iterations=0, progress=False)


def test_random_search_extended_on_resume_keeps_the_prefix(tmp_path):
    path = tmp_path / "history.json"
    short = random_search(_Recording(), BOUNDS, _predict_params, BUDGET, iterations=2, initial_points=2,
                          history_path=path, progress=False)
    calls = _Recording()
    longer = random_search(calls, BOUNDS, _predict_params, BUDGET, iterations=6, initial_points=2,
                           history_path=path, progress=False)
    fresh = random_search(_Recording(), BOUNDS, _predict_params, BUDGET, iterations=6, initial_points=2,
                          progress=False)
    assert len(calls.calls) == 4
    assert [t.rates for t in longer.trials[:4]] == [t.rates for t in short.trials]
    assert [t.rates for t in longer.trials] == [t.rates for t in fresh.trials]


def test_each_trial_logs_one_line_with_the_best_so_far(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="compresskit.search"):
        result = random_search(lambda rates: rates["a"], {"a": (0.0, 0.9)}, lambda rates: 1234, (0, 10000),
                               iterations=1, initial_points=2, progress=False, latency=(lambda rates: 2.0, 3.0))
    lines = [record.getMessage() for record in caplog.records if record.name == "compresskit.search"]
    assert len(lines) == 3
    assert all(line.startswith(f"trial {i}/3 (random): rates a=") for i, line in enumerate(lines, 1))
    last, best = result.trials[-1].objective, min(t.objective for t in result.trials)
    assert f"; 1,234 params; 2 ms predicted; objective {last:.4g} (best {best:.4g}); " in lines[-1]
