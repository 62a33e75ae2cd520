"""Results on disk change as a whole. A run's folder (a step's results/<step>/, a seed's, a sweep's run) holds one
complete run: the previous one until the new one is complete, then the new one, never a mix of the two, even when
the writing process is killed (SIGKILL included) at any moment — replace_run. Any other result file is written
beside its place and renamed over it, so a reader finds the old file or the new one, never half of one —
atomic_write_bytes and the helpers over it. A failed write is a DataError that names the file and what the system
said."""
import contextlib
import ctypes
import errno
import io
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from harness.errors import DataError, UsageError, interrupts_held, os_reason

_UMASK = os.umask(0)
os.umask(_UMASK)

# The files of one run: common.write_artifacts writes them all but log.txt, which a sweep's driver adds (runs.keep_run).
# In a run's folder, an entry with one of these names belongs to the run there; any other (a step's seeds/, search*/,
# ablation/, seeds.json, ...) belongs to something else and stays when the run is replaced.
RUN_FILES = frozenset({"summary.txt", "rf.md", "curves.png", "misclassified.png", "confusion.png", "features.png",
                       "samples.png", "model.pt", "metrics.json", "log.txt"})

# What else a run's folder may hold (check_run_folder): what the project's sweeps and its people put beside a run —
# seeds/, seeds.json, seeds.md, seeds-11-20/, search*/, search-recipes.txt, search-story.md, ablation/, runs/,
# frontier.png, a stage's log — is files of these kinds, with names not in capitals (README.md, LICENSE.txt,
# CHANGELOG.md are a project's own), and folders that hold only such things.
RESULT_SUFFIXES = frozenset({".json", ".md", ".txt", ".log", ".png"})
# ... and what the project's own writing leaves there, for a moment or when it is killed: check_writable's probe,
# atomic_write_bytes's temporary file, the folders replace_run makes beside a run's folder (a seed's, in seeds/);
# and what a desktop adds to any folder it shows.
_OWN_HIDDEN = re.compile(r"\.write-test-.+|\..+\.tmp|\..+\.(new|old)-[0-9a-f]{8}")
_DESKTOP_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def replace_run(out, files):
    """Make the folder `out` hold the run `files` ({name in RUN_FILES: bytes or text}) instead of the run it held,
    in one step: whatever a reader looks at — a person, report.py, the page, the reuse of a completed run — `out`
    holds the whole previous run until the new one is whole, then the whole new one, whatever moment the writing
    process is killed at. `out` and its parents are made if missing.

    How: the run is written into a sibling `.<name>.new-XXXXXXXX` (the same parent, so the same filesystem) and
    fsynced; the entries of `out` that are not a run's files are moved into it; and the two folders are exchanged
    by one call, Linux's renameat2(RENAME_EXCHANGE). Where that call is missing (another system, or a filesystem
    that refuses it), `out` is renamed aside to `.<name>.old-XXXXXXXX` and the new folder renamed in: for that
    instant `out` does not exist, and a process killed there leaves it to recover_folder to put the old folder
    back. The folder that went aside holds the previous run, and whatever another program added to `out` meanwhile,
    which is moved across too; then it is removed.

    Why the entries that are not the run's are moved, not left or copied: the run's files must leave as a set (the
    previous run's samples.png or log.txt must not stay beside a run that wrote none), so what is exchanged is the
    folder, and what is not the run must go with it. A move is one rename per entry however large it is (a step's
    seeds/ holds hundreds of files) and keeps them the very same files: a program writing into seeds/ meanwhile
    writes into the folder that ends up in `out` (or, in that instant, fails to find its path, and says so); a copy
    or a tree of hard links would silently drop such a write. The price: between the first move and the exchange
    (microseconds) a reader finds the run in `out` whole but those entries absent, and a process killed in that
    instant leaves them in the sibling until the next run into `out` moves them back (recover_folder). No run's
    file is ever seen beside another run's.

    Runs into one parent folder take turns (an flock on it): so one run's recovery never takes another's folder,
    still being written, for a leftover. An interrupt (Ctrl-C, SIGTERM) waits for the few renames of the swap; one
    that came during them says that the run is in place (KeyboardInterrupt.left_behind, which run_main prints)."""
    out = Path(os.path.realpath(out))
    strays = sorted(set(files) - RUN_FILES)
    if strays:
        raise ValueError(f"{', '.join(strays)}: not a run's file; a new one belongs in RUN_FILES")
    swapped = False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with _turn(out.parent):
            check_run_folder(out)  # before anything moves: a folder that is not a run's is left as it is
            _recover(out)
            new = _new_sibling(out)
            try:
                _write_folder(new, files)
                with interrupts_held():
                    _swap_in(new, out)
                    swapped = True
            except BaseException as stop:
                if swapped and isinstance(stop, KeyboardInterrupt):
                    stop.left_behind = f"the run was complete and is in {out}, whole"
                with contextlib.suppress(OSError):
                    _recover(out)  # before the exchange: back as it was; after it: what is left is cleaned
                raise
            with contextlib.suppress(OSError):  # the run is in place; what stays beside it is the next run's to clean
                _fsync_folder(out.parent)
                _recover(out)
    except OSError as e:  # before the swap: the swap is the last step that can fail
        raise DataError(f"could not write the run to {out}: {os_reason(e)}; it holds the previous run, as it was") \
            from None


def recover_folder(out):
    """Undo what an interrupted replace_run left beside the folder `out`, so that it holds its run and everything
    else it held: a folder renamed aside and not replaced is put back, the entries that are not a run's files come
    back into `out`, and the leftovers are removed. Every run into `out` calls it before it looks at `out`, so it
    first refuses a folder that is not a run's (check_run_folder): a UsageError, before any training, nothing in
    `out` or beside it touched."""
    out = Path(os.path.realpath(out))
    if not out.parent.is_dir():
        return
    try:
        with _turn(out.parent):
            check_run_folder(out)
            _recover(out)
    except OSError as e:
        raise DataError(f"could not clean up beside {out} after an interrupted run: {os_reason(e)}") from None


def check_run_folder(out):
    """Refuse, with a UsageError naming what does not belong, a folder `out` that is not a run's: one that holds
    anything no run or sweep writes — a .git, a README.md, a program, a person's files: `--out .` or `--out ~`.
    replace_run moves every entry of `out` that is not a run's file through a folder beside it, and a run's files
    would land among someone else's. A missing or empty folder is a run's, and so is one that holds a run, a
    sweep's folders and the files people keep beside them (RESULT_SUFFIXES), at any depth: every folder in
    results/ is."""
    out = Path(out)
    found = _not_a_result(out)
    if found is not None:
        where, why = found
        raise UsageError(f"argument --out: {out} is not a run's folder: it holds {where}, {why}; a run goes into a "
                         "new folder or one that holds runs only, and this one was left as it is")


def _not_a_result(folder):
    """(the first entry under `folder` that no run or sweep wrote, as a path relative to it; why) — None where all
    of them are a run's or a sweep's, or `folder` is missing. Breadth first, so `.git` is named before something
    deep; symbolic links are not followed."""
    queue = [Path()]
    for relative in queue:  # grows as folders are found
        try:
            with os.scandir(folder / relative) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):  # missing (a new folder), or gone meanwhile
            continue
        except OSError as e:
            return str(relative) if relative.parts else ".", f"which cannot be read ({os_reason(e)})"
        for entry in entries:
            name, path = entry.name, relative / entry.name
            if name in RUN_FILES or name in _DESKTOP_LITTER:
                continue
            if name.startswith("."):
                if _OWN_HIDDEN.fullmatch(name):
                    continue
                return str(path), "which no run or sweep writes"
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_folder = False
            if is_folder:
                queue.append(path)
            elif os.path.splitext(name)[1] not in RESULT_SUFFIXES or os.path.splitext(name)[0].isupper():
                return str(path), "which no run or sweep writes"
    return None


_LEFTOVER = r"\.{name}\.(new|old)-[0-9a-f]{{8}}"


def _new_sibling(out):
    while True:
        new = out.parent / f".{out.name}.new-{secrets.token_hex(4)}"
        try:
            os.mkdir(new)
        except FileExistsError:
            continue
        if out.is_dir():
            shutil.copymode(out, new)
        return new


def _leftovers(out):
    """The siblings an interrupted replace_run of `out` left: (folders renamed aside, folders made beside it)."""
    pattern = re.compile(_LEFTOVER.format(name=re.escape(out.name)))
    found = {"new": [], "old": []}
    for name in sorted(os.listdir(out.parent)):
        match = pattern.fullmatch(name)
        if match:
            found[match.group(1)].append(out.parent / name)
    return found["old"], found["new"]


def _recover(out):
    aside, made = _leftovers(out)
    if aside and not os.path.lexists(out):  # killed between the fallback's two renames: the old folder goes back
        os.rename(aside.pop(), out)
    for leftover in aside + made:
        if out.is_dir():
            _carry(leftover, out)
        shutil.rmtree(leftover)


def _write_folder(folder, files):
    for name, data in files.items():
        with open(folder / name, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())


def _swap_in(new, out):
    if not out.is_dir():  # the first run into `out`
        _fsync_folder(new)
        os.rename(new, out)
    else:
        _carry(out, new)
        _fsync_folder(new)
        if not _exchange(new, out):
            aside = new.with_name(new.name.replace(".new-", ".old-"))
            os.rename(out, aside)
            os.rename(new, out)


def _carry(source, target):
    """Move into `target` every entry of `source` that is not a run's file, where `target` lacks it; a folder that
    both hold is merged so. What `target` already has is the later of the two, and is kept."""
    for name in sorted(os.listdir(source)):
        if name not in RUN_FILES:
            _merge(source / name, target / name)


def _merge(source, target):
    if not os.path.lexists(target):
        os.rename(source, target)
    elif source.is_dir() and target.is_dir() and not source.is_symlink() and not target.is_symlink():
        for name in sorted(os.listdir(source)):
            _merge(source / name, target / name)


AT_FDCWD, RENAME_EXCHANGE = -100, 2  # linux/fcntl.h, linux/fs.h
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def _exchange(a, b):
    """Swap the paths `a` and `b` in one call (Linux's renameat2 RENAME_EXCHANGE); False where this system or the
    filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc 2.28 and later
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in _UNSUPPORTED:
        return False
    raise OSError(error, os.strerror(error), str(b))


def _fsync_folder(folder):
    """Make a folder's entries durable (POSIX; elsewhere a folder cannot be opened so)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _turn(folder):
    """One replace_run into `folder` at a time, across processes: an flock on the folder itself, released when the
    process ends however it ends. None where the system (or a network filesystem) has no such lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def atomic_write_bytes(path, data):
    """Write one file whole: into a temporary file beside it, fsynced, then renamed over it."""
    path = Path(path)
    try:
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
    except OSError as e:
        raise DataError(f"could not write {path}: {os_reason(e)}; it is as it was") from None


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj):
    return json.dumps(obj, indent=2) + "\n"


def atomic_write_json(path, obj):
    atomic_write_text(path, json_text(obj))


def png_bytes(fig):
    """A matplotlib figure as a PNG file's bytes; the figure is closed."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def atomic_save_figure(fig, path):
    atomic_write_bytes(path, png_bytes(fig))


def state_dict_bytes(model):
    """A model.pt file's bytes: the model's plain state_dict, on the CPU (load_state_dict reads it back)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def load_state_dict(path):
    """A saved model.pt: a plain state_dict, so it loads with weights_only=True (no code runs on loading)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def prepare_run_folder(out):
    """Before a run trains: refuse a folder that is not a run's (check_run_folder, through recover_folder: one line,
    nothing touched), undo a run here that was killed as it was swapped in (`out` as it was, nothing beside), and
    make sure the run can be built beside `out` and swapped in (replace_run)."""
    check_writable(Path(out).parent)
    recover_folder(out)
    check_writable(out)


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
