"""Training data: IDX parsing, Debian's Fashion-MNIST, image folders, crops, splits, and the exact kernel crop."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.space import ArchConfig
from ofakit.ofa_core.static import build_subnet
from ofakit.ofa_core.train.data import CenterCrop, ImageFolder, RandomResizedCrop, TensorImages, eval_batches, \
    fashion_mnist, make_splits, open_source, prefetch, read_idx, train_batch
from ofakit.ofa_core.train.evaluate import crop_depthwise_to_input


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fmnist():
    return fashion_mnist("train")


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_errors(tmp_path: Path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(UserError, match="bad magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(UserError, match="header says 10"):
        read_idx(tmp_path / "short")
    with pytest.raises(UserError, match="cannot read IDX"):
        read_idx(tmp_path / "missing.gz")
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_from_the_debian_package(fmnist):
    assert len(fmnist) == 60000 and fmnist.n_classes == 10
    assert fmnist.images.shape == (60000, 1, 28, 28) and fmnist.images.dtype == torch.uint8
    assert np.bincount(fmnist.labels).tolist() == [6000] * 10
    assert len(fashion_mnist("t10k")) == 10000


def test_splits_hold_out_training_images_only(fmnist):
    s = make_splits(fmnist, holdout=5000, seed=0, train_subset=300, eval_images=200, calib_images=50)
    assert len(s.train) == 300 and len(s.holdout) == 200 and len(s.calib) == 50
    full = make_splits(fmnist, holdout=5000, seed=0)
    assert len(full.holdout) == 5000 and len(full.train) == 55000
    assert not set(full.holdout.tolist()) & set(full.train.tolist())
    assert set(s.calib.tolist()) <= set(s.train.tolist())
    assert np.array_equal(s.holdout, full.holdout[:200])  # a cap keeps the same held-out images
    assert not np.array_equal(make_splits(fmnist, 5000, seed=1).holdout, full.holdout)
    with pytest.raises(UserError, match="leaves none to train on"):
        make_splits(fmnist, holdout=60000)


def test_batches_are_rgb_normalised_and_at_the_requested_size(fmnist):
    idx = np.arange(8)
    x, y = train_batch(fmnist, idx, 40, np.random.default_rng(0), (0.35, 1.0))
    assert x.shape == (8, 3, 40, 40) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(y, torch.from_numpy(fmnist.labels[:8]))
    x2, _ = train_batch(fmnist, idx, 40, np.random.default_rng(0), (0.35, 1.0))
    assert torch.equal(x, x2)  # crops and flips come from the rng only
    (xe, ye), = list(eval_batches(fmnist, idx, 28, 8, center_crop=1.0))
    raw = fmnist.images[:8].float().div(255).expand(8, 3, 28, 28)
    assert torch.allclose(xe, fmnist.normalize(raw), atol=1e-5)  # the whole image at its own size is unchanged
    assert [len(b[1]) for b in eval_batches(fmnist, np.arange(10), 32, 4)] == [4, 4, 2]


def test_crop_boxes():
    rrc = RandomResizedCrop.draw(np.random.default_rng(0), 100, (0.2, 1.0))
    for j in range(100):
        x0, y0, x1, y1 = rrc.box(j, 50, 30)
        assert 0 <= x0 < x1 <= 50 + 1e-9 and 0 <= y0 < y1 <= 30 + 1e-9
    assert CenterCrop(0.5).box(0, 40, 20) == (15.0, 5.0, 25.0, 15.0)


def test_image_folder(tmp_path: Path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls, n in (("cat", 3), ("dog", 2)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            arr = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path), workers=2)
    assert isinstance(src, ImageFolder) and src.classes == ("cat", "dog") and src.labels.tolist() == [0, 0, 0, 1, 1]
    x, y = train_batch(src, np.arange(5), 24, np.random.default_rng(0), (0.5, 1.0))
    assert x.shape == (5, 3, 24, 24) and y.tolist() == [0, 0, 0, 1, 1]
    (xe, _), = list(eval_batches(src, np.array([3]), 16, 4))
    assert xe.shape == (1, 3, 16, 16)
    (tmp_path / "dog" / "2.png").write_bytes(b"garbage")
    src = ImageFolder(tmp_path)
    with pytest.raises(UserError, match=r"2\.png: cannot read image"):
        src.crops(np.array([5]), CenterCrop(1.0), 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        open_source(str(tmp_path / "nowhere"))


def test_tensor_images_reject_wrong_layout():
    with pytest.raises(ValueError):
        TensorImages(torch.zeros(2, 28, 28, dtype=torch.uint8), np.zeros(2), ("a",), "x", (0.5,) * 3, (0.5,) * 3)


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(iter(range(20)), depth=3)) == list(range(20))

    def boom():
        yield 1
        raise UserError("bad image")

    with pytest.raises(UserError, match="bad image"):
        list(prefetch(boom()))


@pytest.mark.parametrize("r", [32, 40, 64])
def test_depthwise_kernel_crop_is_exact(r):
    torch.manual_seed(0)
    arch = ArchConfig((7,) * 20, (6,) * 20, (4,) * 5, r)
    net = build_subnet(arch, n_classes=10).eval()
    x = torch.randn(2, 3, r, r)
    with torch.no_grad():
        ref = net(x)
        out = crop_depthwise_to_input(net)(x)
    kernels = [layer.depthwise.conv.kernel_size[0] for layer in net.layers[2:22]]
    assert min(kernels) < 7  # something was cropped at these small resolutions
    assert torch.allclose(ref, out, atol=1e-5, rtol=1e-4)


def test_batch_cache_reuses_batches_and_keeps_accuracy(fmnist):
    from ofakit.ofa_core.train.evaluate import BatchCache, static_accuracy
    splits = make_splits(fmnist, holdout=300, eval_images=120, calib_images=60)
    cache = BatchCache()
    first = cache.batches(fmnist, splits.holdout, 32, 50, 1.0, torch.device("cpu"))
    again = cache.batches(fmnist, splits.holdout, 32, 50, 1.0, torch.device("cpu"))
    assert [len(y) for _, y in first] == [50, 50, 20] and all(a[0] is b[0] for a, b in zip(first, again))
    assert cache.bytes == 120 * 3 * 32 * 32 * 4
    other = cache.batches(fmnist, splits.holdout, 40, 50, 1.0, torch.device("cpu"))  # another resolution
    assert other[0][0].shape[-1] == 40 and cache.bytes == 120 * 3 * (32 * 32 + 40 * 40) * 4
    full = BatchCache(max_bytes=1000)  # too small: streams, stores nothing
    assert len(list(full.batches(fmnist, splits.holdout, 32, 50, 1.0, torch.device("cpu")))) == 3
    assert full.bytes == 0
    torch.manual_seed(0)
    arch = ArchConfig((3,) * 20, (3,) * 20, (2,) * 5, 32)
    net = crop_depthwise_to_input(build_subnet(arch, n_classes=10))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    plain = static_accuracy(net, 32, splits, 50, 1.0)
    net.load_state_dict(state)
    assert static_accuracy(net, 32, splits, 50, 1.0, cache=cache) == plain


def test_cuda_device_without_gpu_is_one_clear_error(monkeypatch):
    from ofakit.ofa_core.train.dist import init_distributed
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device"):
        init_distributed("cuda")
    assert init_distributed(None).device.type == "cpu"
