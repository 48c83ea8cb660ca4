"""Start points of the BO search (``search_rates(start=...)``, e.g. the global allocation): evaluated first,
kept in the history's header so a resume is exact, refused outside the bounds or the budget."""

from __future__ import annotations

import json

import pytest
from test_search import _predict_params, _Recording, _search

START = {"a": 0.3, "b": 0.5, "c": 0.1}  # params 1000*0.7 + 2000*0.5 + 500*0.9 = 2150, in the budget


def test_start_point_is_evaluated_first_then_the_sobol_design():
    recording = _Recording()
    result = _search(recording, iterations=1, initial_points=3, start=[START])
    assert [t.kind for t in result.trials] == ["start", "sobol", "sobol", "sobol", "bo"]
    assert recording.calls[0] == pytest.approx(START)
    assert result.trials[0].predicted_params == _predict_params(START)
    plain = _search(_Recording(), iterations=0, initial_points=3)
    assert [t.rates for t in result.trials[1:4]] == [t.rates for t in plain.trials]  # same Sobol points


def test_resume_with_a_start_point_is_exact_and_another_start_is_refused(tmp_path):
    straight = _search(_Recording(), iterations=2, initial_points=3, start=[START])
    path = tmp_path / "history.json"
    with pytest.raises(KeyboardInterrupt):
        _search(_Recording(fail_at=4), iterations=2, initial_points=3, start=[START], history_path=path)
    assert json.loads(path.read_text())["start"] == [START]
    resumed_calls = _Recording()
    resumed = _search(resumed_calls, iterations=2, initial_points=3, start=[START], history_path=path)
    assert len(resumed_calls.calls) == 2
    assert [t.rates for t in resumed.trials] == [t.rates for t in straight.trials]
    with pytest.raises(ValueError, match="cannot resume, start"):
        _search(_Recording(), iterations=2, initial_points=3, start=[{**START, "c": 0.2}], history_path=path)


@pytest.mark.parametrize(("start", "match"), [
    ({"a": 0.3, "b": 0.5}, r"a start point must give a rate for each of \['a', 'b', 'c'\]"),
    ({"a": 0.3, "b": 0.5, "c": 0.95}, "is outside the bounds"),
    ({"a": 0.0, "b": 0.0, "c": 0.0}, r"is outside the budget \[1800, 2200\]: 3,500 params predicted"),
])
def test_bad_start_points_raise(start, match):
    with pytest.raises(ValueError, match=match):
        _search(_Recording(), iterations=0, initial_points=2, start=[start])
