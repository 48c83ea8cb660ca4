"""The released checkpoints of the detectors this package builds, for ``NAME:released`` model specs.

Plain data, declared to compresskit through the ``compresskit.weights`` entry point
(:mod:`compresskit.models.released` fetches and hash-checks them). The sha256 values are those of the
files as published. No direct download URL is recorded: the authors publish these files through their
repositories' release pages, so ``retinaface_mnet025:released`` asks for the file to be placed in the
torch hub cache, and checks it once there.
"""

from __future__ import annotations

RELEASED_WEIGHTS: dict[str, dict[str, str]] = {
    "retinaface_mnet025": {
        "file": "retinaface_mnet025_official.pth",
        "sha256": "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
        "licence": "MIT",
        "source": "the RetinaFace MobileNet-0.25 weights of the biubug6/Pytorch_Retinaface release",
    },
    "featherface_v1": {
        "file": "featherface_v1_thirdparty.pth",
        "sha256": "78cee1c6b825d155d2778e39c27b39b2edb4c45249bed34ffe8a5a80f65f6a00",
        "licence": "MIT",
        "source": "FeatherFace V1 trained by a third party, fokouarnaud/FeatherFace",
    },
}
