"""An image-folder dataset (``root/CLASS_NAME/image.png``) that needs no torchvision.

The layout and class order follow ``torchvision.datasets.ImageFolder``: one sub-folder per class,
classes sorted by name, label = index in that order, files sorted by path. Images are decoded
with Pillow, converted to RGB, resized to ``image_size`` (bilinear, no crop: the aspect ratio
changes for non-square images) and normalised ``(x / 255 - mean) / std`` per channel.

Caveats:
    * No augmentation; pass ``transform`` (tensor -> tensor) for flips or crops.
    * Every image is decoded on every epoch (no cache): use ``num_workers`` in the DataLoader for
      large folders.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from compresskit.utils.images import DEFAULT_MAX_SIZE, decode_reduction

__all__ = ["IMAGE_SUFFIXES", "IMAGENET_MEAN", "IMAGENET_STD", "ImageFolder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolder(Dataset):
    """``(image float[3, H, W], label int)`` samples from ``root/CLASS/*.{png,jpg,...}``.

    Args:
        root: The folder of class folders.
        image_size: ``H`` or ``(H, W)`` every image is resized to.
        mean: Per-channel mean of ``x / 255`` (RGB order).
        std: Per-channel standard deviation.
        classes: Class names in label order; default: the sorted sub-folder names. Give the
            training folder's classes to a validation folder so labels agree.
        transform: Optional ``tensor -> tensor`` applied after normalisation.

    Raises:
        ValueError: ``root`` is not a folder, has no class folders, or a class has no images.

    Example:
        >>> data = ImageFolder("data/train", image_size=224)   # doctest: +SKIP
        >>> image, label = data[0]; image.shape                # doctest: +SKIP
        torch.Size([3, 224, 224])
    """

    #: Longest image side decoded whole (px); a larger JPEG is decoded reduced, a larger other file refused
    #: beyond twice this (:mod:`compresskit.utils.images`). Set it on the instance to change it.
    max_size: int = DEFAULT_MAX_SIZE

    def __init__(self, root: str | os.PathLike[str], image_size: int | Sequence[int] = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 classes: Sequence[str] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder {str(self.root)!r} does not exist or is not a folder")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or any(not isinstance(v, int) or v < 1 for v in size):
            raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values each (std > 0), got {mean!r}, {std!r}")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.classes = list(classes) if classes is not None else found
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-folders; expected {self.root}/CLASS_NAME/image.png")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
                if folder.is_dir() else []
            if not files:
                raise ValueError(f"class {name!r} has no images in {folder} (suffixes {', '.join(IMAGE_SUFFIXES)})")
            self.samples += [(path, label) for path in files]
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, path: Path) -> torch.Tensor:
        """Decode, resize and normalise one image: ``float32[3, H, W]``."""
        from compresskit.utils.optional import require

        Image = require("PIL.Image")

        try:
            decode_reduction(path, self.max_size, option="ImageFolder.max_size")  # header only: refuses a bomb
            with Image.open(path) as image:
                if max(image.size) > self.max_size:  # a JPEG decodes reduced (DCT scaling), never whole
                    image.draft("RGB", (self.size[1], self.size[0]))
                image = image.convert("RGB").resize((self.size[1], self.size[0]), Image.BILINEAR)
                array = np.asarray(image, dtype=np.float32)  # (H, W, 3)
        except OSError as error:
            raise ValueError(f"{path}: not a readable image ({error})") from None
        tensor = torch.from_numpy(array).permute(2, 0, 1) / 255.0  # (H, W, 3) -> (3, H, W)
        return (tensor - self.mean) / self.std

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = self.load(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label
