from pathlib import Path

import numpy as np
import pytest
import torch

from rsbook.infra import data as rsdata
from rsbook.infra.data import (DatasetNotFoundError, ImageDataset, embedded_test_subset, embedded_train_subset, load_dataset,
                         load_train_subset, random_crop_flip, set_data_root)
from rsbook.models.classifiers import ARCHS, MEANS_STDS, build_model


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_embedded_subset_equals_torchvision_every_20th(name, data_root):
    emb = embedded_test_subset(name)
    full = load_dataset(name, train=False, root=data_root)
    assert len(emb) == 500 and len(full) == 10_000
    assert torch.equal(emb.indices, torch.arange(0, 10_000, 20))
    assert torch.equal(emb.images, full.images[::20])
    assert torch.equal(emb.labels, full.labels[::20])


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_embedded_training_subset_equals_torchvision_first_images(name, data_root):
    emb = embedded_train_subset(name)
    full = load_dataset(name, train=True, root=data_root)
    assert len(emb) == 1000 and torch.equal(emb.indices, torch.arange(1000))
    assert torch.equal(emb.images, full.images[:1000]) and torch.equal(emb.labels, full.labels[:1000])


def test_training_subsets_need_no_data_when_shipped(tmp_path, monkeypatch):
    monkeypatch.setenv("RSBOOK_DATA", str(tmp_path))  # nothing there
    sub = load_train_subset("cifar10", 256)
    assert len(sub) == 256 and torch.equal(sub.indices, torch.arange(256))
    with pytest.raises(DatasetNotFoundError, match="RSBOOK_DATA"):
        load_train_subset("cifar10", 5000)  # beyond the shipped images: the full set is needed


def test_a_bad_data_root_parameter_is_named_in_the_error(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match=r"data_root='.*nope' is not a folder"):
        set_data_root(tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match=r"data_root='.*' holds neither cifar-10-batches-py/"):
        set_data_root(tmp_path)
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)  # has MNIST, lacks CIFAR-10
    monkeypatch.setenv("RSBOOK_DATA", "")  # restored after the test, as is the source below
    monkeypatch.setenv("RSBOOK_DATA_SOURCE", "RSBOOK_DATA")
    set_data_root(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"from data_root\). Point data_root at"):
        load_dataset("cifar10", train=True)


def test_datasets_are_uint8_in_memory_and_floats_in_unit_range(data_root):
    ds = load_dataset("cifar10", train=True, root=data_root)
    assert ds.images.shape == (50_000, 3, 32, 32) and ds.images.dtype == torch.uint8
    x, y = ds[0]
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and y == int(ds.labels[0])
    # CIFAR-10 statistics on the [0, 1] scale (no normalization in the data pipeline)
    mean = ds.images[:10_000].float().div(255).mean((0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.01)


def test_missing_dataset_error_names_rsbook_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RSBOOK_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="RSBOOK_DATA"):
        load_dataset("cifar10", train=True)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("svhn", train=False)


def test_test_subset_uses_embedded_copy_without_any_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RSBOOK_DATA", str(tmp_path))  # nothing there
    sub = rsdata.test_subset("cifar10", every=100)
    assert torch.equal(sub.indices, torch.arange(0, 10_000, 100))


def test_random_crop_flip_is_a_shifted_window():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, pad=2, generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) or torch.equal(out[b], w.flip(2)) for w in windows)


def test_batches_cover_the_dataset_once():
    ds = ImageDataset("mnist", torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10))
    seen = torch.cat([y for _, y in ds.batches(3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "resnet50"])
def test_models_normalize_first_and_give_logits(arch):
    dataset = "mnist" if arch == "lenet" else "cifar10"
    model = build_model(arch, dataset).eval()
    shape = (1, 28, 28) if dataset == "mnist" else (3, 32, 32)
    x = torch.rand(2, *shape)
    mean, std = MEANS_STDS[dataset]
    manual = model[1]((x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1))
    assert torch.allclose(model(x), manual, atol=1e-5)
    assert model(x).shape == (2, 10)


def test_resnet50_and_bad_arguments():
    model = build_model("resnet50", "imagenet", num_classes=1000).eval()
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg", "cifar10")
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("cifar_resnet20", "cifar10")[1].__class__(depth=21)


class _FakeTorchvisionCIFAR10:
    """Stands in for torchvision's CIFAR10: finds ``root/cifar-10-batches-py/done``; a download writes part of the
    files, then fails (``fail``) or completes."""

    fail = True

    def __init__(self, root, train, download):
        folder = Path(root) / "cifar-10-batches-py"
        if download:
            folder.mkdir(parents=True, exist_ok=True)
            (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
            if self.fail:
                raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
            (folder / "done").write_text("ok")
        elif not (folder / "done").exists():
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        self.data = np.zeros((2, 32, 32, 3), dtype=np.uint8)
        self.targets = [0, 1]


def _cache_without_data_root(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.delenv("RSBOOK_DATA", raising=False)
    monkeypatch.delenv("RSBOOK_DATA_SOURCE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _FakeTorchvisionCIFAR10)
    return tmp_path / "cache"


def test_a_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    cache = _cache_without_data_root(tmp_path, monkeypatch)
    monkeypatch.setattr(_FakeTorchvisionCIFAR10, "fail", True)
    with pytest.raises(DatasetNotFoundError, match=r"cifar10 is not under .*cache.rsbook.data and could not be downloaded "
                                                  r"\(OSError: .*name resolution.*\)\. Set RSBOOK_DATA"):
        load_dataset("cifar10", train=False)
    assert not cache.exists()  # not even the cache folder
    cache.mkdir()  # an existing cache folder is left as it was: empty
    with pytest.raises(DatasetNotFoundError, match="could not be downloaded"):
        load_dataset("cifar10", train=True)
    assert list(cache.iterdir()) == []


def test_a_complete_download_is_moved_into_the_cache(tmp_path, monkeypatch):
    cache = _cache_without_data_root(tmp_path, monkeypatch)
    monkeypatch.setattr(_FakeTorchvisionCIFAR10, "fail", False)
    ds = load_dataset("cifar10", train=False)
    assert len(ds) == 2
    assert sorted(p.name for p in (cache / "rsbook").iterdir()) == ["data"]  # no temporary folder left beside it
    assert (cache / "rsbook" / "data" / "cifar-10-batches-py" / "done").exists()


#: The documented normalization constants (NOTES; Cohen et al.'s code): the deployed model must use exactly these.
DOCUMENTED = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)), "mnist": ((0.1307,), (0.3081,))}


def _constants(model):
    return model[0].mean.flatten(), model[0].std.flatten()


@pytest.mark.parametrize("arch,dataset", [("cnn4", "cifar10"), ("lenet", "mnist")])
def test_normalization_is_exact_in_a_model_loaded_from_fp16_weights(arch, dataset, tmp_path):
    from rsbook.models.classifiers import NormalizationMismatchError

    mean, std = (torch.tensor(v, dtype=torch.float32) for v in DOCUMENTED[dataset])
    trained = build_model(arch, dataset)
    assert "0.mean" not in trained.state_dict()  # constants, not weights: never stored
    old_style = {k: v.half() for k, v in trained.state_dict().items()}  # what files stored before: rounded constants
    old_style.update({"0.mean": mean.view(1, -1, 1, 1).half(), "0.std": std.view(1, -1, 1, 1).half()})
    torch.save(old_style, tmp_path / "w.pt")
    for sd in (old_style, {k: v for k, v in old_style.items() if not k.startswith("0.")}):
        model = build_model(arch, dataset)
        model.load_state_dict({k: v.float() for k, v in sd.items()})
        assert all(torch.equal(a, b) for a, b in zip(_constants(model), (mean, std)))
    other = dict(old_style, **{"0.std": torch.full_like(old_style["0.std"], 0.25)})
    with pytest.raises(NormalizationMismatchError, match=r"normalization std \(0.std = \[0.25.*not even at fp16 precision"):
        build_model(arch, dataset).load_state_dict(other)


def _arch_dataset(config: dict) -> tuple[str, str] | None:
    """The classifier a stored model's config describes (a fine-tuning's through its base; ``None`` for
    a denoiser or a noise-level selector, which have no normalization layer)."""
    if config.get("type") == "SelectorConfig":
        return None
    if config.get("arch") in ARCHS and config.get("dataset") in DOCUMENTED:
        return config["arch"], config["dataset"]
    return _arch_dataset(config["base"]) if isinstance(config.get("base"), dict) else None


def test_the_committed_checkpoints_load_with_the_exact_constants():
    import json

    from rsbook.infra.artifacts import ArtifactStore
    from rsbook.training.classifier import TrainConfig, trained_model

    folders = sorted((Path(__file__).resolve().parents[1] / "book" / "artifacts").iterdir())
    loaded = 0
    for payload in sorted(p for f in folders for p in f.glob("*.pt")):
        config = json.loads(payload.with_suffix(".json").read_text())["config"]
        found = _arch_dataset(config)
        if found is None:  # a denoiser: no normalization layer
            continue
        arch, dataset = found
        if config["type"] == "TrainConfig":  # the path every chapter loads them by (sha256 checked)
            model = trained_model(TrainConfig(**{k: v for k, v in config.items() if k != "type"}), ArtifactStore(payload.parent))
        else:
            model = build_model(arch, dataset)
            model.load_state_dict({k: v.float() for k, v in torch.load(payload, weights_only=True).items()})
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in DOCUMENTED[dataset])
        assert all(torch.equal(a, b) for a, b in zip(_constants(model), (mean, std))), payload
        loaded += 1
    assert loaded >= 15
