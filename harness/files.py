"""Atomic writes: every result file is written beside its place and renamed over it, so a reader (or the next run)
finds the old file or the new one, never half of one, and an interrupted run leaves the previous result in place."""
import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

from harness.errors import UsageError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path, data):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_save_figure(fig, path):
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_state_dict(model, path):
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state_dict(path):
    """A saved model.pt: a plain state_dict, so it loads with weights_only=True (no code runs on loading)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def check_writable(folder):
    """Fail now, not after 15 epochs, if results could not be saved."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"argument --out: cannot write to {str(folder)!r}: {e.strerror or e} "
                         "(choose a folder you can write)") from None
