"""Tasks: what a compression run needs from a model family, its data and its metrics.

* :mod:`.protocol` -- the :class:`Task` protocol a recipe's ``task`` implements;
* :mod:`.classification` -- :class:`ClassificationTask`, :func:`image_folders` (``task: image_classification``);
* :mod:`.image_folder` -- :class:`ImageFolder`, an image-folder dataset that needs no torchvision.
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Task": "protocol", "check_task": "protocol", "task_args_error": "protocol",
    "ClassificationTask": "classification", "classifier_name": "classification", "image_folders": "classification",
    "stage_groups": "classification",
    "IMAGENET_MEAN": "image_folder", "IMAGENET_STD": "image_folder", "IMAGE_SUFFIXES": "image_folder",
    "ImageFolder": "image_folder",
})
