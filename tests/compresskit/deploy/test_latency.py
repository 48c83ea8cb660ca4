"""The latency model (compresskit.deploy.latency): monotone in channels, cached by the right key; latency budgets
that cannot be met fail before training, naming the budget and the reachable range."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import compresskit.deploy.benchmark
from compresskit import find_groups
from compresskit.cli import cli
from compresskit.deploy.latency import LatencyModel
from compresskit.search.bayesian import random_search

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "shapes_classifier.yaml"


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.head = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))))


def _model(tmp_path: Path, threads: int = 1) -> LatencyModel:
    torch.manual_seed(0)
    model = TinyNet().eval()
    groups = find_groups(model, torch.randn(1, 3, 16, 16), protect=["head"])
    latency = LatencyModel(model, groups, (1, 3, 16, 16), threads=threads, cache_dir=tmp_path, name="tiny")
    latency.rounds, latency.warmup = 3, 1
    return latency


@pytest.fixture
def count_measurements(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = compresskit.deploy.benchmark.measure

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(compresskit.deploy.benchmark, "measure", counting)
    return calls


def test_prediction_is_monotone_in_channels(tmp_path):
    latency = _model(tmp_path)
    latency.calibrate({"default": (0.0, 0.8)}, samples=3)
    predicted = [latency.predict(rate) for rate in (0.0, 0.2, 0.4, 0.6, 0.8)]
    assert all(later <= earlier for earlier, later in zip(predicted, predicted[1:])), predicted
    features = [latency.features(rate) for rate in (0.0, 0.5)]
    assert (features[1] <= features[0]).all() and features[0][-1] == features[1][-1] == 1.0
    assert latency.predict(0.0) > 0


def test_measurements_are_cached_by_channel_configuration(tmp_path, count_measurements):
    latency = _model(tmp_path)
    # 0.50 and 0.51 remove the same 16 of 32 channels: one configuration, one measurement
    assert latency.config_key(0.5) == latency.config_key(0.51) != latency.config_key(0.25)
    first = latency.measure(0.5)
    assert latency.measure(0.51) == first and len(count_measurements) == 1
    latency.measure(0.25)
    assert len(count_measurements) == 2

    again = _model(tmp_path)  # same model, input, threads, runtime: the file is read, nothing re-measured
    assert again.cache_path == latency.cache_path and again.measurements == 2
    assert again.measure(0.5) == pytest.approx(first) and len(count_measurements) == 2

    other = _model(tmp_path, threads=2)  # another key: another file, measured afresh
    assert other.cache_path != latency.cache_path and other.measurements == 0
    stored = json.loads(latency.cache_path.read_text())
    assert stored["key"]["threads"] == 1 and stored["key"]["input_shape"] == [1, 3, 16, 16]
    assert stored["key"]["runtime"].startswith("onnxruntime ") and stored["key"]["model"].startswith("tiny@")


def test_a_cache_file_with_another_key_is_never_read(tmp_path):
    latency = _model(tmp_path)
    latency.measure(0.5)
    stored = json.loads(latency.cache_path.read_text())
    stored["key"]["threads"] = 7
    latency.cache_path.write_text(json.dumps(stored))
    assert _model(tmp_path).measurements == 0


def test_the_search_never_evaluates_a_candidate_over_the_latency_budget():
    predict = lambda rates: 10.0 * (1.0 - rates["a"]) + 5.0 * (1.0 - rates["b"])  # noqa: E731
    evaluated: list[dict[str, float]] = []
    result = random_search(lambda rates: evaluated.append(rates) or rates["a"], {"a": (0.0, 0.9), "b": (0.0, 0.9)},
                           lambda rates: 100, (0, 1000), iterations=6, initial_points=2, progress=False,
                           latency=(predict, 8.0))
    assert len(evaluated) == 8 and all(predict(r) <= 8.0 for r in evaluated)
    assert all(t.predicted_latency_ms == pytest.approx(predict(t.rates)) for t in result.trials)
    with pytest.raises(ValueError, match=r"max_latency_ms 1 \(predicted 1.5 ms at the upper bounds, 15 ms"):
        random_search(lambda rates: 0.0, {"a": (0.0, 0.9), "b": (0.0, 0.9)}, lambda rates: 100, (0, 1000),
                      iterations=1, initial_points=2, progress=False, latency=(predict, 1.0))


def test_an_unreachable_latency_budget_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(RECIPE), "--run-dir", str(run_dir),
                                      "--set", "search.budget.max_latency_ms=0.0001",
                                      "--set", f"search.latency.cache_dir={tmp_path / 'cache'}",
                                      "--set", "search.latency.rounds=2"])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert "shapes_classifier.yaml: search.budget max_latency_ms 0.0001 cannot be met: rates within the " \
           "layer-group bounds measure " in last
    assert "ms (ONNX Runtime, 1 thread(s), input 1x3x24x24)" in last
    assert not run_dir.exists()  # nothing trained, nothing written


def test_a_latency_budget_unreachable_with_the_parameter_band_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(cli, ["run", str(RECIPE), "--dry-run",
                                      "--set", "search.budget={min_params: 70000, max_params: 77652, "
                                               "max_latency_ratio: 0.3}",
                                      "--set", f"search.latency={{rounds: 2, calibration: 3, "
                                               f"cache_dir: {tmp_path / 'cache'}}}"])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    # either the corners already miss it, or the parameter band does: both name budget and range
    assert "search.budget max_latency_ratio 0.3 (= " in last and "cannot be met" in last
    assert " ms (ONNX Runtime, 1 thread(s), input 1x3x24x24)" in last


def test_the_history_names_a_latency_budget_only_when_there_is_one(tmp_path):
    bounds = {"a": (0.0, 0.9)}
    random_search(lambda rates: rates["a"], bounds, lambda rates: 1, (0, 10), iterations=0, initial_points=2,
                  progress=False, history_path=tmp_path / "plain.json")
    random_search(lambda rates: rates["a"], bounds, lambda rates: 1, (0, 10), iterations=0, initial_points=2,
                  progress=False, history_path=tmp_path / "latency.json", latency=(lambda rates: 1.0, 2.5))
    plain, latency = (json.loads((tmp_path / name).read_text()) for name in ("plain.json", "latency.json"))
    assert "max_latency_ms" not in plain and latency["max_latency_ms"] == 2.5
    assert [t["predicted_latency_ms"] for t in plain["trials"]] == [None, None]
    with pytest.raises(ValueError, match="cannot resume, max_latency_ms is 2.5 in the history but 3.0 now"):
        random_search(lambda rates: rates["a"], bounds, lambda rates: 1, (0, 10), iterations=1, initial_points=2,
                      progress=False, history_path=tmp_path / "latency.json", latency=(lambda rates: 1.0, 3.0))


class _Corner:
    """A fake latency model: 20 layer groups of 8 channels (100 params each); group ``g0`` holds most of the
    latency. Channels are whole: a rate keeps ``8 - floor(8 rate)`` of them."""

    names = [f"g{i}" for i in range(20)]

    @staticmethod
    def kept(rate: float) -> int:
        return 8 - int(rate * 8 + 1e-9)

    def predictor(self, rates):
        return sum(100 * self.kept(rates[name]) for name in self.names)

    def predict(self, rates):
        return 50.0 * self.kept(rates["g0"]) / 8 + sum(self.kept(rates[name]) / 8 for name in self.names[1:])


def test_the_joint_check_walks_to_the_corner_that_uniform_samples_miss():
    import numpy as np

    from compresskit.deploy._latency_joint import check_joint, fastest_in_band

    fake = _Corner()
    low, high = np.zeros(20), np.full(20, 0.9)
    # 1,400-1,600 of 16,000 params removed and under 26 ms: only with g0 pruned to 1 channel (the fastest:
    # 7 of g0's channels and 9 others removed, 6.25 + 19 - 9/8 = 24.125 ms)
    found = fastest_in_band(fake, fake.names, low, high, (14_400, 14_600), limit=26.0)
    assert found is not None and found <= 26.0
    assert fastest_in_band(fake, fake.names, low, high, (14_400, 14_600), limit=0.0) == pytest.approx(24.125)
    # the check accepts it, and refuses (naming the band, what the walk reached, and what to do) what no rates meet
    recipe = type("R", (), {"source": "r.yaml", "seed": 0, "search": type("S", (), {
        "budget": type("B", (), {"min_params": 14_400, "max_params": 14_600})()})()})()
    bounds = dict.fromkeys(fake.names, (0.0, 0.9))
    check_joint(recipe, fake, bounds, 26.0, "max_latency_ms 26", (8.0, 69.0), "ONNX Runtime")
    with pytest.raises(ValueError, match=r"cannot be met together with \[14400, 14600\] parameters: rates inside the "
                                         r"parameter band predict 24.1\d to .* lower search.budget.min_params"):
        check_joint(recipe, fake, bounds, 24.0, "max_latency_ms 24", (8.0, 69.0), "ONNX Runtime")
