"""Scale-out: the pipeline under ``torchrun`` (2 CPU processes, gloo) and the sharding helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from compresskit.run import PHASES, TRAINING_PHASES
from compresskit.train import distributed

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo not available")


# --- shard_loader, in process ------------------------------------------------------------


def _collate(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def _loader() -> DataLoader:
    data = TensorDataset(torch.arange(10).float()[:, None], torch.arange(10))
    return DataLoader(data, batch_size=3, shuffle=True, collate_fn=_collate, drop_last=False)


def test_shard_loader_is_identity_without_torchrun():
    loader = _loader()
    assert not dist.is_initialized()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard_loader(loader) is loader
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    distributed.barrier()  # no-op
    assert distributed.init().world_size == 1 and not dist.is_initialized()


def test_shard_loader_gives_each_rank_its_own_half():
    shards = [distributed.shard_loader(_loader(), seed=3, num_replicas=2, replica=r) for r in range(2)]
    seen = []
    for shard in shards:
        assert shard.batch_size == 3 and shard.collate_fn is _collate and len(shard.sampler) == 5
        shard.sampler.set_epoch(0)
        seen.append([int(i) for x, _ in shard for i in x[:, 0]])
    assert sorted(seen[0] + seen[1]) == list(range(10))  # disjoint, together the whole data set
    again = distributed.shard_loader(_loader(), seed=3, num_replicas=2, replica=0)
    again.sampler.set_epoch(0)
    assert [int(i) for x, _ in again for i in x[:, 0]] == seen[0]  # same seed, same order


def test_shard_loader_rejects_what_it_cannot_shard():
    with pytest.raises(TypeError, match="DataLoader"):
        distributed.shard_loader([1, 2, 3], num_replicas=2, replica=0)
    with pytest.raises(ValueError, match="both"):
        distributed.shard_loader(_loader(), num_replicas=2)


# --- the pipeline under torchrun ---------------------------------------------------------

TOY = [
    "task_args.train_size=64", "task_args.val_size=32",
    "teacher.train.epochs=1", "distill.epochs=1", "prune.schedule.epochs=1", "finetune.epochs=1",
    "search.iterations=2", "search.initial_points=2",
]


def test_shapes_recipe_under_torchrun_two_cpu_processes(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "compresskit", "run", "recipes/shapes_classifier.yaml", "--run-dir", str(run_dir)]
    for override in TOY:
        command += ["--set", override]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU, gloo
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    # Rank 0 alone speaks: every phase reported once, the final lines once.
    for name in PHASES:
        assert result.stdout.count(f"[{name}] started\n") == 1, result.stdout
    assert result.stdout.count("run directory:") == 1

    # Every training phase ran data-parallel on disjoint halves of the 64 images.
    shards = {}
    for line in result.stdout.splitlines():
        if "] data-parallel: " in line:
            phase, payload = line[1:].split("] data-parallel: ")
            shards[phase] = json.loads(payload)
    assert sorted(shards) == sorted(TRAINING_PHASES)
    for summary in shards.values():
        assert summary == {"world_size": 2, "dataset": 64, "samples_per_rank": [32, 32], "overlap": 0}

    # Files written once, by rank 0.
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"] == list(PHASES)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == list(TRAINING_PHASES)  # one epoch each, one line each
    for name in ("final.pt", "model.onnx", "report.md", "search.json", "rates.json"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob("*.last.pt"))

    from compresskit import load_pruned
    from compresskit.pruning.budget import count_params

    model = load_pruned(run_dir / "final.pt", trust=["examples.shapes_classifier"])
    assert count_params(model) == state["phases"]["finetune"]["params"]
    logits = model(torch.zeros(2, 3, 24, 24))
    assert logits.shape == (2, 4)


def test_python_dash_m_compresskit():
    result = subprocess.run([sys.executable, "-m", "compresskit", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "run" in result.stdout
