"""The rate search also switches off optional blocks (``search.bypass``): decoding, exact predictors per
bypassed subset, a toy run whose final model rebuilds with the chosen blocks bypassed, pre-flight errors;
under a latency budget, one latency model per subset (its own calibration and cache file)."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
import yaml
from test_bypass import Fuse, Gate  # the same toy blocks as the bypass tests
from test_pipeline import REPO, TOY, quiet, write_recipe
from torch import nn

from compresskit import count_params
from compresskit.config import RecipeError, load_recipe
from compresskit.deploy.latency import LatencyBudget, LatencyModel, LatencySettings
from compresskit.groups.find import LayerGroupSpec
from compresskit.models.bypass import Bypass, bypass_blocks
from compresskit.models.persist import load_pruned
from compresskit.pruning import prune
from compresskit.run import build_task, run
from compresskit.run.bypass_choice import (
    BYPASS_BOUNDS,
    THRESHOLD,
    BypassLatency,
    Reductions,
    bypass_dims,
    decode,
    fit_rates,
    with_bypass,
)
from compresskit.run.context import ModelSource
from compresskit.run.layer_groups import GroupSelection
from compresskit.run.plan import plan

BLOCKS = ["gate", "refine", "fuse"]
BUILDER = f"{__name__}:toy_net"


class Residual(nn.Module):
    """``x + branch(x)``: bypassed, only ``x`` is left."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // 2, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels // 2)
        self.conv2 = nn.Conv2d(channels // 2, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.bn1(self.conv1(x))))


class ToyNet(nn.Module):
    bypassable = {"gate": "identity", "refine": "identity", "fuse": "first"}

    def __init__(self, num_classes: int = 4, bypass: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.gate = Gate(16)
        self.refine = Residual(16)
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fuse = Fuse(16)
        self.fc = nn.Linear(16, num_classes)
        if bypass:
            bypass_blocks(self, list(bypass))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.refine(self.gate(self.stem(x)))
        return self.fc(self.fuse([fine, self.down(fine)]).mean(dim=(2, 3)))


def toy_net(num_classes: int = 4, bypass: tuple[str, ...] | list[str] = ()) -> ToyNet:
    return ToyNet(num_classes, bypass)


def toy_net_fixed(num_classes: int = 4) -> ToyNet:
    """A builder without ``bypass=``: saved models could not rebuild a reduced architecture."""
    return ToyNet(num_classes)


SPECS = (LayerGroupSpec("trunk", patterns=("stem.*", "gate.*", "down.*", "fuse.*"), bounds=(0.0, 0.5)),
         LayerGroupSpec("refine", patterns=("refine.*",), bounds=(0.0, 0.5)))
RECIPE_GROUPS = {spec.name: {"patterns": list(spec.patterns), "bounds": list(spec.bounds)} for spec in SPECS}


def test_decoding_names_dims_apart_from_layer_groups():
    assert bypass_dims(["gate", "fuse"]) == {"bypass:gate": BYPASS_BOUNDS, "bypass:fuse": BYPASS_BOUNDS}
    point = {"trunk": 0.3, "bypass:gate": THRESHOLD, "bypass:fuse": THRESHOLD - 1e-9, "refine": 0.1}
    assert decode(point, ["gate", "fuse"]) == ({"trunk": 0.3, "refine": 0.1}, ["gate"])
    assert decode({"trunk": 0.3}, []) == ({"trunk": 0.3}, [])
    assert fit_rates({"trunk": 0.3, "refine": 0.1}, ["trunk"]) == {"trunk": 0.3}
    source = ModelSource("student", BUILDER, {"bypass": ["gate"]})
    assert with_bypass(source, ["fuse", "gate"]).model_args == {"bypass": ["gate", "fuse"]}
    assert with_bypass(source, []) is source


@pytest.mark.parametrize("rates", [{"trunk": 0.5, "refine": 0.5}, {"trunk": 0.25, "refine": 0.4}])
def test_the_predictor_is_exact_for_every_bypassed_subset(rates):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 12, 12)
    student = toy_net().eval()
    selection = GroupSelection(SPECS, protect=("fc",))
    reductions = Reductions(student, selection.find(student, (x,)), selection.find, (x,))
    seen = set()
    for count in range(len(BLOCKS) + 1):
        for blocks in itertools.combinations(BLOCKS, count):
            built = toy_net(bypass=blocks).eval()  # what every later phase builds, weights of the student
            prefixes = tuple(f"{b}." for b in blocks)
            built.load_state_dict({k: v for k, v in student.state_dict().items() if not k.startswith(prefixes)})
            reduced = reductions.get(blocks)[0]
            assert torch.equal(built(x), reduced(x))
            groups = selection.find(built, (x,))
            prune(built, (x,), fit_rates(rates, sorted(groups.layer_groups)), groups=groups)
            assert reductions.params(rates, blocks) == count_params(built)
            seen.add(count_params(built))
    assert len(seen) == 8  # every subset is a different model
    assert sorted(reductions.get(["refine"])[1].layer_groups) == ["trunk"]  # its only group is gone


def _toy_recipe(tmp_path, monkeypatch, **search):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 12, 12)
    student = toy_net()
    selection = GroupSelection(SPECS, protect=("fc",))
    fewest = Reductions(student, selection.find(student, (x,)), selection.find, (x,)).params(
        {"trunk": 0.5, "refine": 0.5}, [])
    base = yaml.safe_load((REPO / "recipes" / "shapes_classifier.yaml").read_text())
    toy = {key: value for key, value in copy.deepcopy(TOY).items() if key != "extends"}  # sections replaced whole
    recipe = {**base, **toy, "name": "toy_bypass", "student": {"model": BUILDER},
              "prune": {"groups": RECIPE_GROUPS, "protect": ["fc"], "schedule": {"epochs": 1, "batch_size": 32}}}
    # Below the fewest parameters rates alone reach: every feasible candidate bypasses a block.
    recipe["search"] = {**recipe["search"], "method": "random", "budget": {"min_params": 0, "max_params": fewest - 1},
                        "bypass": BLOCKS, **search}
    return write_recipe(tmp_path, recipe, monkeypatch)


def test_a_toy_run_picks_blocks_and_its_final_model_rebuilds_without_them(tmp_path, monkeypatch):
    recipe = load_recipe(_toy_recipe(tmp_path, monkeypatch))
    checked = plan(recipe, build_task(recipe))
    assert checked.reachable[0] < recipe.search.budget.max_params
    run_dir = tmp_path / "run"
    run(recipe, run_dir=run_dir, log=quiet)
    rates = json.loads((run_dir / "rates.json").read_text())
    assert rates["bypass"] and set(rates["bypass"]) <= set(BLOCKS)
    assert set(rates["rates"]) == {"trunk", "refine"}
    final = load_pruned(run_dir / "final.pt", trust=[BUILDER])
    assert {name for name in BLOCKS if isinstance(final.get_submodule(name), Bypass)} == set(rates["bypass"])
    assert count_params(final) == rates["predicted_params"] <= recipe.search.budget.max_params
    pruned = torch.load(run_dir / "pruned.pt", weights_only=True)
    assert pruned["builder_kwargs"]["bypass"] == rates["bypass"]
    trials = json.loads((run_dir / "search.json").read_text())["trials"]
    assert all(set(t["rates"]) == {"trunk", "refine", *[f"bypass:{b}" for b in BLOCKS]} for t in trials)
    assert (run_dir / "model.onnx").exists()
    assert f"Bypassed blocks: {', '.join(rates['bypass'])}." in (run_dir / "report.md").read_text()


@pytest.mark.parametrize("overrides, message", [
    (["search.bypass=[gate, down]"], r"search.bypass: 'down' is not declared bypassable \(ToyNet.bypassable: "),
    (["search.bypass=[gate, gate]"], r"search.bypass: 'gate' is listed twice"),
    (["student.model_args={bypass: [gate]}"], r"search.bypass: 'gate' is already bypassed by student.model_args"),
    (["search.enabled=false", "prune.rates={trunk: 0.2}"], r"search.bypass: needs search.enabled"),
])
def test_preflight_refuses_bad_bypass_candidates(tmp_path, monkeypatch, overrides, message):
    recipe = load_recipe(_toy_recipe(tmp_path, monkeypatch), overrides)
    with pytest.raises(RecipeError, match=message) as error:
        plan(recipe, build_task(recipe))
    assert "\n" not in str(error.value)


def test_preflight_refuses_a_builder_without_bypass(tmp_path, monkeypatch):
    path = _toy_recipe(tmp_path, monkeypatch)
    recipe = load_recipe(path, [f"student.model={__name__}:toy_net_fixed"])
    with pytest.raises(RecipeError, match=r"search.bypass: the student with \['gate', 'refine', 'fuse'\] bypassed "
                                          r"cannot be built \(student.model '.*:toy_net_fixed' must accept "
                                          r"bypass=\[\.\.\.\]\): TypeError"):
        plan(recipe, build_task(recipe))


def test_the_builder_must_really_bypass(tmp_path, monkeypatch):
    path = _toy_recipe(tmp_path, monkeypatch)
    recipe = load_recipe(path, [f"student.model={__name__}:toy_net_ignoring"])
    with pytest.raises(RecipeError, match=r"search.bypass: student.model '.*' ignored bypass="):
        plan(recipe, build_task(recipe))


def toy_net_ignoring(num_classes: int = 4, bypass: tuple[str, ...] | list[str] = ()) -> ToyNet:
    return ToyNet(num_classes)


def _reductions() -> tuple[Reductions, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 12, 12)
    student = toy_net().eval()
    selection = GroupSelection(SPECS, protect=("fc",))
    return Reductions(student, selection.find(student, (x,)), selection.find, (x,)), x


def _point(rates: dict[str, float], blocks: list[str]) -> dict[str, float]:
    return {**rates, **{f"bypass:{b}": BYPASS_BOUNDS[1] if b in blocks else 0.0 for b in BLOCKS}}


def test_each_bypassed_subset_predicts_with_its_own_calibration(tmp_path, monkeypatch):
    # A stand-in runtime, exactly linear in each model's dense MACs with a slope of its own unpruned
    # parameter count: a subset calibrated on its own reduced student reproduces it exactly.
    def measure(self: LatencyModel, rates):
        if self.reference_ms is None:
            self.reference_ms = 1.0
        self.measured = getattr(self, "measured", 0) + 1
        return 1e-3 * self.predictor(0.0) * float(self.features(rates)[0]) + 0.25

    monkeypatch.setattr(LatencyModel, "measure", measure)
    reductions, _ = _reductions()
    student, groups, _ = reductions.get([])
    settings = LatencySettings("toy", (1, 3, 12, 12), 1, 2, tmp_path, 3, 0)
    base = settings.open(student, groups)
    budget = LatencyBudget(base, 1e9, base.unpruned_ms(), (0.0, 1.0), "max_latency_ms 1e9", settings)
    latency = BypassLatency(budget, reductions, dict(SPECS_BOUNDS), BLOCKS)
    assert latency.models == {}  # nothing calibrated before the search asks
    rates = {"trunk": 0.25, "refine": 0.4}
    predicted = {}
    for blocks in ([], ["gate"], ["refine", "fuse"]):
        predicted[tuple(blocks)] = latency.predict(_point(rates, blocks))
        model = latency.get(blocks)
        kept = fit_rates(rates, model.predictor.layer_groups)
        assert model.weights is not None and model.measured == 3 + 3 + (blocks == [])  # its own calibration
        assert predicted[tuple(blocks)] == pytest.approx(measure(model, kept), rel=1e-6)
        assert {b for b in BLOCKS if isinstance(model.model.get_submodule(b), Bypass)} == set(blocks)
    assert sorted(latency.models) == [(), ("gate",), ("refine", "fuse")]  # only the subsets visited
    assert len(set(predicted.values())) == 3  # every subset predicts its own milliseconds


SPECS_BOUNDS = {spec.name: spec.bounds for spec in SPECS}


def test_the_latency_cache_key_separates_bypassed_subsets(tmp_path):
    reductions, _ = _reductions()
    student, groups, _ = reductions.get([])
    settings = LatencySettings("toy", (1, 3, 12, 12), 1, 2, tmp_path, 2, 0)
    base = settings.open(student, groups)
    base.warmup = 1
    assert settings.open_reduced(student, groups, [], base) is base
    models = {blocks: settings.open_reduced(*reductions.get(blocks)[:2], blocks, base)
              for blocks in [("gate",), ("fuse",), ("gate", "fuse")]}
    paths = {base.cache_path, *(model.cache_path for model in models.values())}
    assert len(paths) == 4  # one file per subset
    gate = models[("gate",)]
    assert gate.key.model.startswith("toy-bypass-gate@") and gate.key.model.endswith(base.key.model.split("@")[1])
    assert models[("gate", "fuse")].key.model.startswith("toy-bypass-gate+fuse@")
    gate.warmup = 1
    measured = gate.measure(0.0)  # timed against the full student, on its scale
    assert gate.reference_ms == base.reference_ms and measured > 0
    stored = json.loads(gate.cache_path.read_text())
    assert stored["key"]["model"] == gate.key.model and len(stored["entries"]) == 1
    again = settings.open_reduced(*reductions.get(["gate"])[:2], ["gate"], base)
    assert again.measurements == 1 and again.measure(0.0) == pytest.approx(measured)
    assert models[("fuse",)].measurements == 0 and base.measurements == 1  # base: its unpruned reference


def test_an_unreachable_latency_budget_with_bypass_fails_in_preflight(tmp_path, monkeypatch):
    recipe = load_recipe(_toy_recipe(tmp_path, monkeypatch), [
        "search.budget.max_latency_ms=0.0001", f"search.latency={{rounds: 2, cache_dir: {tmp_path / 'cache'}}}"])
    with pytest.raises(RecipeError, match=r"search.budget max_latency_ms 0.0001 cannot be met: rates within the "
                                          r"layer-group bounds, with up to \['gate', 'refine', 'fuse'\] bypassed, "
                                          r"measure [0-9.]+ to [0-9.]+ ms \(ONNX Runtime, 1 thread\(s\), input ") as error:
        plan(recipe, build_task(recipe))
    assert "\n" not in str(error.value)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2  # the student and the fastest subset, nothing else


def test_a_toy_run_with_bypass_and_a_latency_budget_records_the_chosen_latency(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    recipe = load_recipe(_toy_recipe(tmp_path, monkeypatch), [
        "search.budget.max_latency_ms=1000", f"search.latency={{rounds: 2, calibration: 2, cache_dir: {cache}}}"])
    checked = plan(recipe, build_task(recipe))
    assert checked.latency["limit_ms"] == 1000
    run_dir = tmp_path / "run"
    run(recipe, run_dir=run_dir, log=quiet)
    rates = json.loads((run_dir / "rates.json").read_text())
    assert rates["bypass"] and set(rates["bypass"]) <= set(BLOCKS)
    latency = rates["latency"]
    assert latency["limit_ms"] == 1000 and 0 < latency["predicted_ms"] <= 1000 and latency["measured_ms"] > 0
    assert latency["reachable_ms"][0] <= latency["unpruned_ms"] <= latency["reachable_ms"][1] * 1.5
    trials = json.loads((run_dir / "search.json").read_text())["trials"]
    assert all(t["predicted_latency_ms"] is not None for t in trials)
    names = [json.loads(path.read_text())["key"]["model"] for path in cache.glob("*.json")]
    assert any(n.startswith(f"{BUILDER}@") for n in names)  # the student, nothing bypassed: the limit's reference
    assert any(n.startswith(f"{BUILDER}-bypass-{'+'.join(rates['bypass'])}@") for n in names)  # the chosen subset
