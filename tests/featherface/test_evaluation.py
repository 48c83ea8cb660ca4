import numpy as np
import pytest

from featherface.evaluation import (
    ImageGroundTruth,
    box_overlaps,
    evaluate,
    evaluate_folder,
    load_mat_ground_truth,
    read_prediction_file,
    read_predictions,
    size_subsets,
    voc_ap,
    write_predictions,
)

ALL = np.array([0, 1])


def _hand_worked_case():
    # image A: faces g0, g1 count in every subset; image B: face g2 counts only in "hard"
    ground_truth = {
        "ev/A": ImageGroundTruth(np.array([[0, 0, 10, 10], [20, 0, 10, 10]], float),
                                 {"easy": ALL, "hard": ALL}),
        "ev/B": ImageGroundTruth(np.array([[0, 0, 10, 10]], float),
                                 {"easy": np.zeros(0, np.int64), "hard": np.array([0])}),
    }
    predictions = {  # raw scores 0.6..0.9 -> normalised (s - 0.6) / 0.3
        "ev/A": np.array([[0, 0, 10, 10, 0.90],     # 1.000  TP g0
                          [50, 50, 10, 10, 0.80],   # 0.667  FP (no overlap)
                          [1, 0, 10, 10, 0.65],     # 0.167  duplicate of g0 (IoU 0.83) -> FP
                          [20, 0, 10, 10, 0.60]]),  # 0.000  TP g1
        "ev/B": np.array([[0, 0, 10, 10, 0.70]]),   # 0.333  TP in hard, ignored in easy
    }
    return predictions, ground_truth


def test_hand_worked_ap():
    predictions, ground_truth = _hand_worked_case()
    ap = evaluate(predictions, ground_truth, subsets=("easy", "hard"))
    # easy (2 faces; B's prediction is neither TP nor FP): cumulative (proposals, recalled) by threshold
    # (1,1) (2,1) (3,1) (4,2) -> P 1, .5, .33, .5 at R .5, .5, .5, 1 -> AP = .5 * 1 + .5 * .5
    assert ap["easy"] == pytest.approx(0.75)
    # hard (3 faces): (1,1) (2,1) (3,2) (4,2) (5,3) -> envelope 1, 2/3, 3/5 at R 1/3, 2/3, 1
    assert ap["hard"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ground_truth_as_predictions_scores_one_and_unseen_images_are_skipped():
    _, ground_truth = _hand_worked_case()
    ground_truth["ev/never_predicted"] = ImageGroundTruth(np.array([[5, 5, 9, 9]], float),
                                                          {"easy": np.array([0]), "hard": np.array([0])})
    predictions = {key: np.hstack((gt.boxes, np.ones((len(gt.boxes), 1))))
                   for key, gt in ground_truth.items() if key != "ev/never_predicted"}
    assert evaluate(predictions, ground_truth, subsets=("easy", "hard")) == {"easy": 1.0, "hard": 1.0}
    predictions["ev/never_predicted"] = np.zeros((0, 5))  # present but empty: its face is a miss
    assert evaluate(predictions, ground_truth, subsets=("hard",))["hard"] == pytest.approx(3 / 4)


def test_voc_ap_and_overlaps_hand_worked():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    boxes = np.array([[0, 0, 9, 9]], float)
    assert box_overlaps(boxes, np.array([[5, 0, 14, 9], [10, 10, 20, 20]], float)) == pytest.approx(
        np.array([[50 / 150, 0.0]]))  # +1 pixel convention: 10x10 boxes sharing a 5x10 strip


def test_size_subsets_are_nested():
    boxes = np.array([[0, 0, 60, 50], [0, 0, 30, 30], [0, 0, 10, 8]], float)
    subsets = size_subsets(boxes, {"easy": 40, "medium": 20, "hard": 0})
    assert [s.tolist() for s in subsets.values()] == [[0], [0, 1], [0, 1, 2]]


def test_prediction_folder_round_trip_and_errors(tmp_path):
    predictions, _ = _hand_worked_case()
    write_predictions(tmp_path, predictions)
    name, rows = read_prediction_file(tmp_path / "ev" / "A.txt")
    assert name == "A.jpg" and rows.shape == (4, 5)
    read = read_predictions(tmp_path)
    assert set(read) == {"ev/A", "ev/B"}
    assert np.allclose(read["ev/A"], predictions["ev/A"])
    bad = tmp_path / "bad" / "x.txt"
    bad.parent.mkdir()
    bad.write_text("x.jpg\n2\n1 2 3 4 0.5\n1 2 three 4 0.5\n")
    with pytest.raises(ValueError, match=r"x\.txt:4: expected 'x y w h score'"):
        read_prediction_file(bad)
    bad.write_text("x.jpg\n3\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match=r"x\.txt:2: header says 3"):
        read_prediction_file(bad)


@pytest.mark.shared_data
def test_official_mat_ground_truth(shared_data, tmp_path):
    root = shared_data / "widerface"
    ground_truth = load_mat_ground_truth(root / "ground_truth")
    assert len(ground_truth) == 3226
    keys = sorted(f"{p.parent.name}/{p.stem}" for p in (root / "WIDER_val" / "images").glob("*/*.jpg"))
    assert len(keys) == 194 and all(key in ground_truth for key in keys)
    assert sum(len(ground_truth[key].boxes) for key in keys) == 4259
    for key in keys:  # subsets are nested: easy within medium within hard
        keep = ground_truth[key].keep
        assert set(keep["easy"]) <= set(keep["medium"]) <= set(keep["hard"])
    predictions = {key: np.hstack((ground_truth[key].boxes, np.ones((len(ground_truth[key].boxes), 1))))
                   for key in keys}
    write_predictions(tmp_path, predictions)
    ap = evaluate_folder(tmp_path, root / "ground_truth")
    assert ap == {"easy": 1.0, "medium": 1.0, "hard": 1.0}


def test_pr_counts_follow_official_last_index_rule_for_any_order():
    from featherface.evaluation import image_pr_counts

    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(0, 1, 40), 2)  # unsorted, with ties
    recalled = np.cumsum(rng.integers(0, 2, 40)).astype(float)
    is_proposal = rng.uniform(size=40) > 0.2
    thresholds = 1 - (np.arange(1000) + 1) / 1000
    expected = np.zeros((1000, 2))
    for t, threshold in enumerate(thresholds):  # the official loop, written out
        above = np.flatnonzero(scores >= threshold)
        if len(above):
            last = above[-1]
            expected[t] = [is_proposal[:last + 1].sum(), recalled[last]]
    assert np.array_equal(image_pr_counts(scores, recalled, is_proposal, thresholds), expected)
