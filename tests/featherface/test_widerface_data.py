import cv2
import numpy as np
import pytest
import torch

from featherface.data.widerface import (
    BGR_MEAN,
    AnnotationError,
    WiderFaceDataset,
    detection_collate,
    image_to_tensor,
    parse_retinaface_labels,
    parse_wider_split,
)


def _write_image(path, size=(40, 60)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 128, np.uint8))


@pytest.fixture
def retinaface_tree(tmp_path):
    _write_image(tmp_path / "images" / "0--a" / "a.jpg")
    _write_image(tmp_path / "images" / "0--a" / "b.jpg")
    (tmp_path / "label.txt").write_text(
        "# 0--a/a.jpg\n"
        "10 5 20 10 12 8 0.0 26 8 0.0 20 10 0.0 14 13 0.0 25 13 0.0 0.9\n"
        "30 20 8 8 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0\n"
        "# 0--a/b.jpg\n"
        "1 2 3 4\n"
        "5 5 0 4\n")
    return tmp_path


def test_retinaface_layout(retinaface_tree):
    parsed = parse_retinaface_labels(retinaface_tree / "label.txt")
    assert [r.path.name for r in parsed.records] == ["a.jpg", "b.jpg"]
    first = parsed.records[0].targets
    assert first[0, :4].tolist() == [10, 5, 30, 15]  # x y w h -> x1 y1 x2 y2
    assert first[0, 4:14].tolist() == [12, 8, 26, 8, 20, 10, 14, 13, 25, 13]
    assert first[:, 14].tolist() == [1, -1]  # second face has no landmarks
    assert parsed.dropped_faces == 1  # zero-width face in b.jpg
    assert parsed.records[0].source.endswith("label.txt:1")
    image, targets = WiderFaceDataset(parsed)[0]
    assert image.shape == (3, 40, 60) and targets.shape == (2, 15)
    assert torch.allclose(targets[0, :4], torch.tensor([10 / 60, 5 / 40, 30 / 60, 15 / 40]))


def test_retinaface_malformed_line_names_file_and_line(retinaface_tree):
    label = retinaface_tree / "label.txt"
    label.write_text("# 0--a/a.jpg\n1 2 3 4\n1 2 3 4 5\n# 0--a/b.jpg\n1 2 3 4\n")
    with pytest.raises(AnnotationError, match=r"label\.txt:3: expected 4, 19 or 20 numbers"):
        parse_retinaface_labels(label)
    parsed = parse_retinaface_labels(label, on_error="skip")
    assert [r.path.name for r in parsed.records] == ["b.jpg"]
    assert len(parsed.skipped) == 1 and "label.txt:3" in parsed.skipped[0]
    label.write_text("# 0--a/a.jpg\n1 2 x 4\n")
    with pytest.raises(AnnotationError, match=r"label\.txt:2: non-numeric"):
        parse_retinaface_labels(label)


def test_official_split_layout(tmp_path):
    _write_image(tmp_path / "images" / "0--a" / "a.jpg")
    _write_image(tmp_path / "images" / "0--a" / "empty.jpg")
    gt = tmp_path / "gt.txt"
    gt.write_text("0--a/a.jpg\n3\n"
                  "1 2 10 12 0 0 0 0 0 0\n"
                  "5 5 10 10 0 0 0 1 0 0\n"   # invalid
                  "7 7 0 3 0 0 0 0 0 0\n"     # zero width
                  "0--a/empty.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n")
    parsed = parse_wider_split(gt, tmp_path / "images")
    assert [len(r.targets) for r in parsed.records] == [1, 0]
    assert parsed.records[0].targets[0, :4].tolist() == [1, 2, 11, 14]
    assert parsed.records[0].targets[0, 14] == -1 and parsed.dropped_faces == 2
    assert len(parse_wider_split(gt, tmp_path / "images", drop_invalid=False).records[0].targets) == 2


def test_official_split_malformed(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("0--a/a.jpg\n2\n1 2 10 12 0 0 0 0 0 0\n1 2 10\n0--a/b.jpg\n1\n1 1 4 4 0 0 0 0 0 0\n")
    with pytest.raises(AnnotationError, match=r"gt\.txt:4: expected 10 numbers"):
        parse_wider_split(gt, tmp_path)
    parsed = parse_wider_split(gt, tmp_path, on_error="skip")
    assert [r.path.name for r in parsed.records] == ["b.jpg"] and "gt.txt:4" in parsed.skipped[0]
    gt.write_text("0--a/a.jpg\nmany\n")
    with pytest.raises(AnnotationError, match=r"gt\.txt:2: expected a face count"):
        parse_wider_split(gt, tmp_path)


def test_corrupt_image_raises_or_is_skipped(retinaface_tree):
    (retinaface_tree / "images" / "0--a" / "a.jpg").write_bytes(b"not a jpeg")
    parsed = parse_retinaface_labels(retinaface_tree / "label.txt")
    with pytest.raises(ValueError, match=r"a\.jpg: cannot read image: not decodable .*\(annotated at .*label\.txt:1\)"):
        WiderFaceDataset(parsed)[0]
    dataset = WiderFaceDataset(parsed, on_error="skip")
    image, targets = dataset[0]  # falls through to b.jpg
    assert targets.shape[0] == 1 and len(dataset.skipped) == 1


def test_detection_collate():
    batch = [(torch.zeros(3, 8, 8), torch.zeros(2, 15)), (torch.ones(3, 8, 8), torch.zeros(0, 15))]
    images, targets = detection_collate(batch)
    assert images.shape == (2, 3, 8, 8) and [t.shape[0] for t in targets] == [2, 0]
    with pytest.raises(ValueError, match="equally sized"):
        detection_collate([(torch.zeros(3, 8, 8), torch.zeros(0, 15)), (torch.zeros(3, 4, 8), torch.zeros(0, 15))])


@pytest.mark.shared_data
def test_real_shared_annotations(shared_data):
    root = shared_data / "widerface"
    official = parse_wider_split(root / "wider_face_split" / "wider_face_train_bbx_gt.txt",
                                 root / "WIDER_train" / "images", drop_invalid=False)
    retina = parse_retinaface_labels(root / "retinaface_labels" / "train_label.txt", root / "WIDER_train" / "images")
    assert len(official.records) == len(retina.records) == 1008  # 9 events x 112 images
    assert official.skipped == retina.skipped == []
    assert sum(len(r.targets) for r in official.records) + official.dropped_faces == 7735
    assert all(r.path.is_file() for r in retina.records)
    val = parse_retinaface_labels(root / "retinaface_labels" / "val_label.txt", root / "WIDER_val" / "images")
    assert len(val.records) == 194 and sum(len(r.targets) for r in val.records) + val.dropped_faces == 4259
    image, targets = WiderFaceDataset(retina)[0]
    assert image.shape[0] == 3 and targets.shape[1] == 15 and (targets[:, 2] > targets[:, 0]).all()


def test_image_to_tensor_subtracts_the_bgr_mean_per_channel():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 1] = (110, 120, 130)  # B, G, R at row 0, column 1
    tensor = image_to_tensor(image)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32  # (H, W, 3) -> (3, H, W)
    assert tensor[:, 0, 1].tolist() == [6.0, 3.0, 7.0]
    assert tensor[:, 1, 2].tolist() == [-m for m in BGR_MEAN]
