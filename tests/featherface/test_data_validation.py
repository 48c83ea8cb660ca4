"""Untrusted data: truncated / empty images are refused by name, dropped boxes are counted by reason,
an empty or unreadable training set fails before training."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from featherface.data.widerface import (
    WiderFaceDataset,
    check_records,
    image_problem,
    parse_retinaface_labels,
    parse_wider_split,
    read_image,
)


def _jpeg(path: Path, size: int = 64) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    ok, encoded = cv2.imencode(".jpg", generator.integers(0, 255, (size, size, 3), dtype=np.uint8))
    assert ok
    path.write_bytes(encoded.tobytes())
    return encoded.tobytes()


def _png(path: Path) -> bytes:
    ok, encoded = cv2.imencode(".png", np.full((16, 16, 3), 90, np.uint8))
    assert ok
    path.write_bytes(encoded.tobytes())
    return encoded.tobytes()


def test_truncated_and_empty_images_are_refused_by_name(tmp_path):
    data = _jpeg(tmp_path / "good.jpg")
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "trailing.jpg").write_bytes(data + b"\x00" * 100)  # padding after the end marker: fine
    png = _png(tmp_path / "good.png")
    (tmp_path / "half.png").write_bytes(png[:-20])
    (tmp_path / "noise.jpg").write_bytes(b"\xff\xd8\xff\xda\x00\x02\xff\xd9 not really")

    assert image_problem(tmp_path / "good.jpg") is None and image_problem(tmp_path / "good.png") is None
    assert image_problem(tmp_path / "trailing.jpg") is None
    assert read_image(tmp_path / "trailing.jpg").shape == (64, 64, 3)
    # OpenCV alone decodes the truncated JPEG without an error: why the byte check exists
    assert cv2.imread(str(tmp_path / "half.jpg")) is not None
    cases = {"half.jpg": "truncated JPEG", "empty.jpg": "empty file (0 bytes)", "half.png": "truncated PNG",
             "noise.jpg": "not decodable", "missing.jpg": "cannot read"}
    for name, reason in cases.items():
        with pytest.raises(ValueError) as raised:
            read_image(tmp_path / name, source="label.txt:7")
        message = str(raised.value)
        assert message.startswith(f"{tmp_path / name}: cannot read image: ") and reason in message
        assert "(annotated at label.txt:7)" in message and "\n" not in message


def test_non_finite_and_negative_boxes_are_counted_by_reason(tmp_path):
    _jpeg(tmp_path / "images" / "e" / "a.jpg")
    (tmp_path / "label.txt").write_text(
        "# e/a.jpg\n"
        "10 10 20 20\n"        # kept
        "nan 10 20 20\n"       # non-finite box
        "10 10 inf 20\n"       # non-finite box
        "10 10 -5 20\n"        # negative width
        "10 10 20 0\n"         # zero height
        "12 12 8 8 1 1 0 nan 2 0 3 3 0 4 4 0 5 5 0 0.9\n")  # kept, landmarks dropped
    parsed = parse_retinaface_labels(tmp_path / "label.txt")
    assert parsed.dropped == {"non-finite box": 2, "width or height <= 0": 2, "non-finite landmarks": 1}
    assert parsed.dropped_faces == 4
    targets = parsed.records[0].targets
    assert targets.shape == (2, 15) and np.isfinite(targets).all()
    assert targets[1, 14] == -1.0  # kept as a face without landmarks

    gt = tmp_path / "gt.txt"
    gt.write_text("e/a.jpg\n3\n1 1 5 5 0 0 0 0 0 0\n1 1 nan 5 0 0 0 0 0 0\n1 1 5 5 0 0 0 1 0 0\n")
    split = parse_wider_split(gt, tmp_path / "images")
    assert split.dropped == {"non-finite box": 1, "flagged invalid": 1} and split.dropped_faces == 2


def test_dataset_and_check_records_name_the_label_line(tmp_path):
    data = _jpeg(tmp_path / "images" / "e" / "a.jpg")
    (tmp_path / "images" / "e" / "b.jpg").write_bytes(data[:300])
    (tmp_path / "label.txt").write_text("# e/a.jpg\n1 1 5 5\n# e/b.jpg\n1 1 5 5\n")
    parsed = parse_retinaface_labels(tmp_path / "label.txt")
    problems = check_records(parsed.records)
    assert len(problems) == 1 and "b.jpg: truncated JPEG" in problems[0] and problems[0].endswith("label.txt:3)")
    with pytest.raises(ValueError, match=r"b\.jpg: cannot read image: truncated JPEG.*label\.txt:3"):
        WiderFaceDataset(parsed)[1]


def _task(tmp_path, train_lines: str):
    from featherface.task import FeatherFaceTask

    data = _jpeg(tmp_path / "images" / "e" / "a.jpg")
    (tmp_path / "images" / "e" / "cut.jpg").write_bytes(data[:200])
    (tmp_path / "train.txt").write_text(train_lines)
    (tmp_path / "val.txt").write_text("# e/a.jpg\n1 1 30 30\n")
    return FeatherFaceTask(data="widerface", image_size=32, train_labels=str(tmp_path / "train.txt"),
                           val_labels=str(tmp_path / "val.txt"), train_images=str(tmp_path / "images"),
                           val_images=str(tmp_path / "images"))


def test_task_check_data_counts_and_refuses(tmp_path):
    task = _task(tmp_path, "# e/a.jpg\n1 1 30 30\nnan 1 3 3\n1 1 -2 3\n")
    assert task.check_data() == {"train_images": 1, "train_dropped_faces": {"non-finite box": 1,
                                                                            "width or height <= 0": 1},
                                 "val_images": 1, "val_dropped_faces": {}}
    with pytest.raises(ValueError, match=r"train\.txt: no images in the train set"):
        _task(tmp_path, "").check_data()
    with pytest.raises(ValueError, match=r"1 unreadable train image\(s\); first: .*cut\.jpg: truncated JPEG"
                                         r".*train\.txt:3\)"):
        _task(tmp_path, "# e/a.jpg\n1 1 30 30\n# e/cut.jpg\n1 1 5 5\n").check_data()


@pytest.mark.parametrize(("train_lines", "fragment"), [
    ("", "data: .*train.txt: no images in the train set"),
    ("# e/cut.jpg\n1 1 5 5\n", "data: 1 unreadable train image"),
    ("# e/a.jpg\n1 1 x 5\n", r"task_args rejected by .*train\.txt:2: non-numeric value"),
])
def test_a_run_on_bad_data_fails_before_any_phase(tmp_path, monkeypatch, train_lines, fragment):
    from compresskit.cli import cli

    _task(tmp_path, "# e/a.jpg\n1 1 30 30\n")  # writes the images
    (tmp_path / "train.txt").write_text(train_lines)
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    args = ["run", "recipes/featherface_nano_b.yaml", "--run-dir", str(tmp_path / "run"),
            "--set", "task_args.data=widerface", "--set", "task_args.image_size=32",
            "--set", f"task_args.train_labels={tmp_path / 'train.txt'}",
            "--set", f"task_args.val_labels={tmp_path / 'val.txt'}",
            "--set", f"task_args.train_images={tmp_path / 'images'}",
            "--set", f"task_args.val_images={tmp_path / 'images'}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    import re

    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and re.search(fragment, last), last
    assert not (tmp_path / "run").exists()


def test_detect_and_evaluate_refuse_empty_and_truncated_images(tmp_path):
    from featherface.detect import cli

    data = _jpeg(tmp_path / "in" / "ok.jpg")
    (tmp_path / "in" / "ok.jpg").unlink()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "zero.jpg").write_bytes(b"")
    runner = CliRunner()
    for name, reason in (("cut.jpg", "truncated JPEG"), ("zero.jpg", "empty file")):
        result = runner.invoke(cli, ["detect", "nano_b", str(tmp_path / name), "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        assert f"{name}: cannot read image: {reason}" in result.output and "Traceback" not in result.output
    event = tmp_path / "val" / "0--e"
    event.mkdir(parents=True)
    (event / "zero.jpg").write_bytes(b"")
    gt = tmp_path / "gt"
    gt.mkdir()
    result = runner.invoke(cli, ["evaluate", "nano_b", "--images", str(tmp_path / "val"), "--gt", str(gt)])
    assert result.exit_code == 2, result.output
    assert "zero.jpg: cannot read image: empty file" in result.output and "Traceback" not in result.output


def test_prepare_reports_dropped_boxes_in_one_line_and_in_the_state(tmp_path, monkeypatch):
    from compresskit.config import load_recipe
    from compresskit.run import prepare

    _task(tmp_path, "# e/a.jpg\n1 1 30 30\nnan 1 3 3\n1 1 3 -3\n1 1 0 3\n")
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    recipe = load_recipe("recipes/featherface_nano_b.yaml", [
        "task_args.data=widerface", "task_args.image_size=32", f"task_args.train_labels={tmp_path / 'train.txt'}",
        f"task_args.val_labels={tmp_path / 'val.txt'}", f"task_args.train_images={tmp_path / 'images'}",
        f"task_args.val_images={tmp_path / 'images'}"])
    lines: list[str] = []
    ctx = prepare(recipe, tmp_path / "run", log=lines.append)
    assert lines == ["data: train_images 1, train_dropped_faces {non-finite box: 1, width or height <= 0: 2}, "
                     "val_images 1, val_dropped_faces {}"]
    assert ctx.state["data"]["train_dropped_faces"] == {"non-finite box": 1, "width or height <= 0": 2}
