import torch

from featherface.box_coder import (
    center_form,
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    point_form,
)


def test_hand_worked_box_encoding():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    box = torch.tensor([[0.45, 0.35, 0.65, 0.75]])  # centre (0.55, 0.55), size (0.2, 0.4)
    deltas = encode_boxes(box, priors)
    # dx = 0.05 / (0.1 * 0.2) = 2.5 ; dy = 0.05 / (0.1 * 0.4) = 1.25 ; sizes equal -> log 1 = 0
    assert torch.allclose(deltas, torch.tensor([[2.5, 1.25, 0.0, 0.0]]), atol=1e-6)
    doubled = encode_boxes(torch.tensor([[0.3, 0.1, 0.7, 0.9]]), priors)  # twice the prior size
    assert torch.allclose(doubled[0, 2:], torch.full((2,), torch.log(torch.tensor(2.0)).item() / 0.2))


def test_hand_worked_landmark_encoding():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    landmarks = torch.tensor([[0.52, 0.54, 0.5, 0.5, 0.48, 0.46, 0.6, 0.7, 0.4, 0.3]])
    deltas = encode_landmarks(landmarks, priors)
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0, -1.0, -1.0, 5.0, 5.0, -5.0, -5.0]])
    assert torch.allclose(deltas, expected, atol=1e-5)


def test_round_trips():
    torch.manual_seed(0)
    priors = torch.rand(50, 4) * 0.5 + 0.1
    centre = torch.rand(50, 2)
    size = torch.rand(50, 2) * 0.3 + 0.01
    boxes = torch.cat((centre - size / 2, centre + size / 2), dim=1)
    assert torch.allclose(decode_boxes(encode_boxes(boxes, priors), priors), boxes, atol=1e-5)
    landmarks = torch.rand(50, 10)
    assert torch.allclose(decode_landmarks(encode_landmarks(landmarks, priors), priors), landmarks, atol=1e-5)
    assert torch.allclose(center_form(point_form(priors)), priors, atol=1e-6)


def test_decode_accepts_batch_dimension():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    zero = torch.zeros(3, 1, 4)
    assert torch.allclose(decode_boxes(zero, priors), torch.tensor([0.4, 0.4, 0.6, 0.6]).expand(3, 1, 4))
    assert decode_landmarks(torch.zeros(3, 1, 10), priors).shape == (3, 1, 10)
