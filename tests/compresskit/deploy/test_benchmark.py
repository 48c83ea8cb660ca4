"""compresskit.deploy.benchmark: interleaving order, warm-up, exact summaries and ratios."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compresskit.deploy.benchmark import benchmark_models, measure, paired_ratio, summarise


def test_measure_warms_up_then_rotates_the_order_each_round():
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    stats = measure(runners, warmup=2, rounds=4)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, untimed
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert list(stats) == ["a", "b", "c"] and all(len(s.samples_ms) == 4 for s in stats.values())
    finished: list[int] = []
    measure(runners, warmup=0, rounds=3, on_round=finished.append)
    assert finished == [0, 1, 2]  # progress: once after each round


def test_summary_and_paired_ratio_exact_values():
    latency = summarise([1.0, 2.0, 3.0, 4.0, 10.0])
    assert latency.median_ms == 3.0
    assert latency.p90_ms == pytest.approx(7.6)  # numpy linear: 4 + 0.6 * (10 - 4)
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 4.0, 3.0]) == 2.0  # median of 2, 1, 3
    with pytest.raises(ValueError, match="equal, non-empty round counts"):
        paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="warmup must be >= 0 and rounds >= 1"):
        measure({"a": lambda: None}, rounds=0)


def test_benchmark_models_records_settings_and_restores_threads():
    before = torch.get_num_threads()
    report = benchmark_models({"small": nn.Conv2d(3, 4, 3), "big": nn.Conv2d(3, 64, 3)},
                              (torch.randn(2, 3, 16, 16),), threads=1, warmup=1, rounds=3)
    assert torch.get_num_threads() == before
    assert (report.threads, report.batch, report.input_shape, report.rounds) == (1, 2, (2, 3, 16, 16), 3)
    assert report.notes == {"small": "torch eager", "big": "torch eager"}
    assert report.ratios("small")["small"] == 1.0
    assert "median ms" in report.table() and "vs small" in report.table()
    with pytest.raises(ValueError, match="unknown reference 'huge'"):
        report.ratios("huge")
