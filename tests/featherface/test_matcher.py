import torch

from featherface.box_coder import point_form
from featherface.matcher import NO_MATCH, box_iou, match_priors


def test_box_iou_hand_worked():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 0.0]]))


def test_threshold_and_forced_best_prior():
    priors = torch.tensor([
        [0.25, 0.25, 0.5, 0.5],   # exactly face 0
        [0.30, 0.25, 0.5, 0.5],   # IoU with face 0 = 0.225/0.275 = 0.82 -> positive
        [0.75, 0.75, 0.5, 0.5],   # far away
        [0.62, 0.62, 0.1, 0.1],   # the best (IoU 0.25 < 0.35) prior for face 1 -> forced
    ])
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.57, 0.57, 0.77, 0.77]])
    assert torch.equal(match_priors(gt, priors), torch.tensor([0, 0, NO_MATCH, 1]))


def test_face_below_min_best_iou_is_dropped():
    priors = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.25, 0.25, 0.5, 0.5]])
    tiny = torch.tensor([[0.1, 0.1, 0.12, 0.12]])  # best IoU 0.0016 < 0.2
    assert torch.equal(match_priors(tiny, priors), torch.full((2,), NO_MATCH))
    both = torch.cat((tiny, torch.tensor([[0.0, 0.0, 0.5, 0.5]])))
    assert torch.equal(match_priors(both, priors), torch.tensor([NO_MATCH, 1]))


def test_shared_best_prior_goes_to_later_face_and_empty_gt():
    priors = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.9, 0.9, 0.01, 0.01]])
    gt = torch.tensor([[0.3, 0.3, 0.7, 0.7], [0.31, 0.31, 0.69, 0.69]])
    assert torch.equal(match_priors(gt, priors), torch.tensor([1, NO_MATCH]))
    assert torch.equal(match_priors(torch.zeros(0, 4), priors), torch.full((2,), NO_MATCH))


def test_every_face_gets_a_prior_on_real_priors():
    from featherface.priors import prior_boxes
    priors = prior_boxes((320, 320))
    gt = torch.tensor([[0.1, 0.1, 0.16, 0.17], [0.5, 0.5, 0.9, 0.95], [0.3, 0.6, 0.33, 0.64]])
    gt_index = match_priors(gt, priors)
    assert set(gt_index[gt_index != NO_MATCH].tolist()) == {0, 1, 2}
    positives = point_form(priors)[gt_index == 1]
    assert (box_iou(positives, gt[1:2]).squeeze(1) >= 0.35).all()
