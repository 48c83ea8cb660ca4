"""Task defaults, the ready ClassificationTask, the image-folder loader and model specs (no torchvision)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from user_project import CLASSES, write_user_project

from compresskit.models.spec import build, load_state_dict, parse_spec, resolve_spec
from compresskit.tasks.classification import ClassificationTask, classifier_name, image_folders, stage_groups
from compresskit.tasks.image_folder import ImageFolder
from compresskit.tasks.protocol import Task, check_task, task_args_error

MODULE = "ck_tasks_models"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tasks")
    write_user_project(folder, MODULE, train_per_class=4, val_per_class=2, size=12)
    return folder


@pytest.fixture
def user_module(project, monkeypatch):
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.chdir(project)
    return __import__(MODULE)


def test_a_task_subclass_needs_only_five_members():
    data = TensorDataset(torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1]))

    class Mine(Task):
        def build_model(self, name, **kwargs):
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))

        def train_loader(self, batch_size, subset=1.0, seed=0):
            return DataLoader(data, batch_size, shuffle=True)

        def val_loader(self, batch_size):
            return DataLoader(data, batch_size)

        def task_loss(self, outputs, batch):
            return nn.functional.cross_entropy(outputs, batch[1]), {}

        def evaluate(self, model):
            return {"accuracy": 0.0}

    task = check_task(Mine())
    assert task.example_inputs()[0].shape == (1, 3, 8, 8)  # the first validation sample
    assert task.inputs((torch.ones(1), torch.zeros(1)))[0].item() == 1.0
    assert task.distill_mask(None, None) is None and tuple(task.protect("x")) == ()
    assert [g.name for g in task.layer_groups("x")] == ["all"] and task.distill_kinds == ("classification",)
    with pytest.raises(ValueError, match="define builder"):
        task.builder("x")


def test_task_args_error_names_the_recipe_key():
    error = FileNotFoundError(2, "No such file or directory", "/d/labels.txt")
    assert task_args_error(error, {"train_labels": "/d/labels.txt"}) == \
        "task_args.train_labels: file not found: /d/labels.txt"
    assert task_args_error(ValueError("bad size"), {}) == "ValueError: bad size"


def test_stage_groups_and_classifier_of_a_torchvision_style_resnet(user_module):
    model = user_module.resnet_tiny()
    assert classifier_name(model) == "fc"
    groups = stage_groups(model)
    assert [(g.name, g.patterns) for g in groups] == [
        ("stem", ("conv1",)), ("layer1", ("layer1", "layer1.*")), ("layer2", ("layer2", "layer2.*"))]
    flat = nn.Sequential(nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 1) for i in range(9)]),
                         nn.Flatten(), nn.Linear(4, 2))
    assert [g.name for g in stage_groups(flat)] == ["stage1", "stage2", "stage3"]  # 9 layers -> 3 stages of 3


def test_image_folder_labels_sizes_and_normalisation(project):
    data = ImageFolder(project / "data" / "val", image_size=(10, 14), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert data.classes == sorted(CLASSES) and len(data) == 6
    image, label = data[0]
    assert image.shape == (3, 10, 14) and -1.0 <= image.min() and image.max() <= 1.0
    assert label == 0 and data[5][1] == 2
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(project / "data" / "val" / "red")


def test_image_folders_task_trains_evaluates_and_saves(user_module, project):
    task = check_task(image_folders(f"{MODULE}:resnet_tiny:resnet_tiny.pth", "data/train", "data/val",
                                    image_size=12))
    model = task.build_model("model")
    metrics = task.evaluate(model)
    assert list(metrics) == ["accuracy", "val_loss"] and 0.0 <= metrics["accuracy"] <= 1.0
    batch = next(iter(task.train_loader(4)))
    loss, logs = task.task_loss(model(*task.inputs(batch)), batch)
    assert loss.ndim == 0 and "ce" in logs
    assert len(list(task.train_loader(2, subset=0.5))) == 3  # 6 of 12 images, batches of 2
    assert task.builder("model") == (f"{MODULE}:resnet_tiny", {})
    assert list(task.protect("model")) == ["fc"]
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        task.build_model("resnet50")
    with pytest.raises(ValueError, match="task_args.val_dir"):
        image_folders(f"{MODULE}:resnet_tiny", "data/train", "no_such_folder")


def test_classification_task_with_loader_functions_checks_label_count():
    data = TensorDataset(torch.randn(8, 3, 8, 8), torch.tensor([0, 1, 2, 3] * 2))
    task = ClassificationTask(lambda: nn.Sequential(nn.Flatten(), nn.Linear(192, 2)),
                              lambda b: DataLoader(data, b, shuffle=True), lambda b: DataLoader(data, b))
    with pytest.raises(ValueError, match="returns 2 logits but the data has label 3"):
        task.evaluate(task.build_model())
    with pytest.raises(ValueError, match="pass builder="):
        task.builder("model")  # a lambda cannot be saved


def test_model_spec_grammar_and_resolution(user_module):
    assert parse_spec("torchvision:resnet18:r18.pth").weights == Path("r18.pth")
    assert parse_spec("pkg.mod:build").weights is None
    assert parse_spec(f"{MODULE}:resnet_tiny", weights="w.pt").weights == Path("w.pt")
    with pytest.raises(ValueError, match="give one"):
        parse_spec("a:b:w.pth", weights="x.pth")
    assert parse_spec(f"{MODULE}:resnet_tiny:resnet_tiny.pth").source == f"{MODULE}:resnet_tiny"
    (Path.cwd() / "resnet_tiny").write_bytes(b"")  # a file named like the callable is not weights
    try:
        assert parse_spec(f"{MODULE}:resnet_tiny") == parse_spec(f"{MODULE}:resnet_tiny", kwargs={})
        assert parse_spec(f"{MODULE}:resnet_tiny").weights is None
    finally:
        (Path.cwd() / "resnet_tiny").unlink()
    assert resolve_spec(parse_spec(f"{MODULE}:resnet_tiny", kwargs={"num_classes": 5})) == \
        (f"{MODULE}:resnet_tiny", {"num_classes": 5})
    try:
        import torchvision.models  # noqa: F401
    except Exception:  # noqa: BLE001 - the broken CUDA wheel on CPU machines
        with pytest.raises(ValueError, match="torchvision"):
            resolve_spec(parse_spec("torchvision:resnet18"))
    else:
        assert resolve_spec(parse_spec("torchvision:resnet18")) == ("torchvision.models.resnet:resnet18", {})


def test_load_state_dict_unwraps_and_names_mismatches(user_module, tmp_path):
    model = user_module.resnet_tiny()
    state = model.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    load_state_dict(user_module.resnet_tiny(), tmp_path / "ddp.pth")
    torch.save({k: v for k, v in state.items() if k != "fc.bias"}, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \(first: fc.bias\)"):
        load_state_dict(model, tmp_path / "short.pth")
    torch.save({**state, "fc.weight": torch.zeros(5, 16)}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"fc.weight \(5, 16\) vs \(3, 16\)"):
        load_state_dict(model, tmp_path / "shape.pth")


def test_timm_and_torchvision_specs_resolve_to_the_function_that_builds(monkeypatch):
    """timm/torchvision do not import on this machine: stand-in modules with their API check the wiring."""
    import sys
    import types

    timm = types.ModuleType("timm")

    def create_model(model_name, pretrained=False, **kwargs):
        return nn.Linear(2, 2)

    create_model.__module__, create_model.__qualname__ = "timm.models._factory", "create_model"
    timm.create_model = create_model
    timm.is_model = lambda name: name == "resnet18"
    timm.list_models = lambda pattern: ["resnet18", "resnet26"]
    monkeypatch.setitem(sys.modules, "timm", timm)
    assert resolve_spec(parse_spec("timm:resnet18")) == ("timm.models._factory:create_model",
                                                         {"model_name": "resnet18"})
    with pytest.raises(ValueError, match="timm has no model 'resnet99'"):
        resolve_spec(parse_spec("timm:resnet99"))

    vision = types.ModuleType("torchvision")
    vision_models = types.ModuleType("torchvision.models")

    def resnet18(*, weights=None, **kwargs):  # torchvision's `weights` is an enum of downloads, not a path
        assert weights is None
        return nn.Linear(2, 2)

    resnet18.__module__, resnet18.__qualname__ = "torchvision.models.resnet", "resnet18"

    def get_model_builder(name):
        if name != "resnet18":
            raise ValueError(f"Unknown model {name}")
        return resnet18

    vision_models.get_model_builder = get_model_builder
    vision_models.list_models = lambda: ["resnet18", "resnet34"]
    vision.models = vision_models
    monkeypatch.setitem(sys.modules, "torchvision", vision)
    monkeypatch.setitem(sys.modules, "torchvision.models", vision_models)
    resnet_module = types.ModuleType("torchvision.models.resnet")
    resnet_module.resnet18 = resnet18
    monkeypatch.setitem(sys.modules, "torchvision.models.resnet", resnet_module)
    assert resolve_spec(parse_spec("torchvision:resnet18:r.pth")) == ("torchvision.models.resnet:resnet18", {})
    with pytest.raises(ValueError, match=r"did you mean \['resnet18'"):
        resolve_spec(parse_spec("torchvision:resnet1"))
    trained = nn.Linear(2, 2)
    torch.save(trained.state_dict(), Path.cwd() / "r18_test.pth")
    try:
        model, builder, kwargs = build(parse_spec("torchvision:resnet18:r18_test.pth"))
    finally:
        (Path.cwd() / "r18_test.pth").unlink()
    assert torch.equal(model.weight, trained.weight) and kwargs == {}  # a state_dict, loaded by compresskit
