from __future__ import annotations

import pytest
import torch

from compresskit.tasks.protocol import check_task
from featherface.task import FeatherFaceTask


@pytest.fixture(scope="module")
def task() -> FeatherFaceTask:
    return FeatherFaceTask("synthetic", image_size=64, train_size=6, val_size=3)


def test_task_satisfies_the_protocol(task):
    assert check_task(task, "featherface") is task
    assert task.builder("nano_b") == ("featherface.models:build_model", {"name": "nano_b"})
    names = [spec.name for spec in task.layer_groups("nano_b")]
    assert names == ["backbone_early", "backbone_late", "efficient_cbam", "efficient_bifpn", "grouped_ssh",
                     "detection_heads"]
    assert "ClassHead.*.conv1x1" in task.protect("nano_b")
    assert "*.offset_conv" in task.protect("featherface_v1")


def test_training_batches_follow_the_global_seed(task):
    def first_batch():
        torch.manual_seed(3)
        return next(iter(task.train_loader(4)))

    (images_a, targets_a), (images_b, targets_b) = first_batch(), first_batch()
    assert images_a.shape == (4, 3, 64, 64) and images_a.dtype == torch.float32
    assert torch.equal(images_a, images_b)
    assert all(torch.equal(a, b) for a, b in zip(targets_a, targets_b))
    torch.manual_seed(4)
    images_c, _ = next(iter(task.train_loader(4)))
    assert not torch.equal(images_a, images_c)


def test_training_batches_shard_under_torchrun(task):
    """``shard_loader`` replaces the task's (index, seed) sampler by a DistributedSampler of plain indices:
    each rank gets its own half of the crops, augmented, reproducible from the seeded torch RNG."""
    from compresskit.train.distributed import shard_loader

    def rank_images(rank):
        torch.manual_seed(3)
        shard = shard_loader(task.train_loader(1), seed=0, num_replicas=2, replica=rank)
        shard.sampler.set_epoch(0)
        return list(shard.sampler), [images for images, _ in shard]

    (indices_0, images_0), (indices_1, images_1) = rank_images(0), rank_images(1)
    assert sorted(indices_0 + indices_1) == list(range(6))  # disjoint halves of the 6 train images
    assert len(images_0) == 3 and all(images.shape == (1, 3, 64, 64) for images in images_0)
    assert all(torch.equal(a, b) for a, b in zip(images_0, rank_images(0)[1]))  # same seed, same crops


def test_subset_takes_a_fraction(task):
    assert len(task.train_loader(2, subset=0.5).dataset) == 3


def test_loss_and_distillation_masks(task):
    torch.manual_seed(0)
    model = task.build_model("nano_b")
    batch = next(iter(task.val_loader(3)))
    outputs = model(*task.inputs(batch))
    loss, logs = task.task_loss(outputs, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and set(logs) == {"loc", "conf", "landm"}
    box_mask, cls_mask, landmark_mask = task.distill_mask(outputs, batch)
    assert cls_mask is None
    assert box_mask.shape == outputs[0].shape[:2] and box_mask.any()
    assert bool((landmark_mask <= box_mask).all())  # faces with landmarks are a subset of faces
    # distill.masks: teacher: the priors where the teacher's face probability is over the threshold, no labels
    logits = torch.zeros_like(outputs[1])
    logits[0, 5, 1] = logits[1, 7, 1] = 3.0  # two confident faces
    logits[2, 9, 1] = 0.1  # barely above the background logit: probability 0.52 > 0.5
    teacher_box, teacher_cls, teacher_landmark = task.teacher_mask((outputs[0], logits, outputs[2]))
    assert teacher_cls is None and teacher_box is teacher_landmark and teacher_box.shape == outputs[0].shape[:2]
    assert sorted(map(tuple, teacher_box.nonzero().tolist())) == [(0, 5), (1, 7), (2, 9)]


def test_evaluate_reports_ap_per_subset_and_loss(task):
    torch.manual_seed(0)
    metrics = task.evaluate(task.build_model("nano_b"))
    assert list(metrics) == ["ap_easy", "ap_medium", "ap_hard", "val_loss"]
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("ap_easy", "ap_medium", "ap_hard"))
    assert metrics["val_loss"] > 0


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"data": "coco"}, "data must be 'synthetic' or 'widerface'"),
    ({"image_size": 100}, "multiple of 32"),
    ({"data": "widerface"}, "needs train_labels and val_labels"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        FeatherFaceTask(**kwargs)
