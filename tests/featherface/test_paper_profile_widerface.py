"""The recipe's ``paper`` profile on real WIDER FACE files, shrunk to toy scale with ``--set``.

Proves the documented WIDER FACE path works end to end: RetinaFace ``label.txt`` parsing with an
explicit image root, real 1024 px images through the training augmentation, the official ``.mat``
subsets for AP, and a physically pruned Nano-B inside the paper's 120K-180K budget.
"""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner
from test_recipe_smoke import RECIPE

from compresskit import count_params, load_pruned
from compresskit.cli import cli


def test_paper_profile_runs_on_real_widerface_files(shared_data, tmp_path):
    wider = shared_data / "widerface"
    run_dir = tmp_path / "run"
    overrides = {
        "threads": 1,
        "task_args.train_labels": wider / "retinaface_labels" / "train_label.txt",
        "task_args.train_images": wider / "WIDER_train" / "images",
        "task_args.val_labels": wider / "retinaface_labels" / "val_label.txt",
        "task_args.val_images": wider / "WIDER_val" / "images",
        "task_args.gt_dir": wider / "ground_truth",
        "task_args.image_size": 64, "task_args.train_size": 8, "task_args.val_size": 4,
        "teacher.train.epochs": 1, "teacher.train.batch_size": 4,
        "distill.epochs": 1, "distill.batch_size": 4,
        "search.iterations": 1, "search.initial_points": 2,
        "search.trial.epochs": 0, "search.trial.batch_size": 4, "search.trial.max_val_batches": 1,
        "prune.schedule.epochs": 1, "prune.schedule.batch_size": 4,
        "finetune.epochs": 1, "finetune.batch_size": 4,
        "export.input_size": "[64,64]",
    }
    args = ["run", str(RECIPE), "--profile", "paper", "--run-dir", str(run_dir)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output

    params = count_params(load_pruned(run_dir / "final.pt"))
    assert 120_000 <= params <= 180_000
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    for model in ("teacher", "student", "pruned"):  # AP on the official WIDER FACE subsets
        metrics = evaluation[model]["metrics"]
        assert {"ap_easy", "ap_medium", "ap_hard"} <= set(metrics)
        assert all(0.0 <= metrics[f"ap_{subset}"] <= 1.0 for subset in ("easy", "medium", "hard"))
    assert (run_dir / "model.onnx").exists()
