"""Ready task types: a model plus data is enough (see :class:`compresskit.task.Task`).

* :class:`compresskit.tasks.classification.ClassificationTask` — image classification
  (cross-entropy, top-1 accuracy, layer groups by stage); :func:`~compresskit.tasks.classification.image_folders`
  builds one from a model spec and ``train/CLASS/*.png``-style folders (recipe ``task: image_classification``).
* :class:`compresskit.tasks.image_folder.ImageFolder` — an image-folder dataset that needs no torchvision.

Submodules are imported on use, so naming this package costs nothing.
"""
