"""Errors a user can cause. They end a program with one line and an exit status, never a traceback."""
import contextlib
import signal
import sys
import threading


class UsageError(Exception):
    """A bad flag or argument: exit status 2."""


class DataError(Exception):
    """Missing, corrupt or unobtainable data, or an unwritable folder: exit status 1."""


class TrainingError(Exception):
    """Training itself went wrong (a non-finite loss, a failed seed): exit status 1."""


class Diverged(TrainingError):
    """The training loss became NaN or infinite: the run stops there. `fit` names the `epoch` and gives the `history`
    of the epochs finished before it; the run's metrics.json records the divergence, a failure of its target."""

    def __init__(self, message, epoch=None, history=()):
        super().__init__(message)
        self.epoch, self.history = epoch, list(history)


class Terminated(KeyboardInterrupt):
    """SIGTERM (from `timeout`, `kill`, a job scheduler or a container stop), raised where Ctrl-C raises
    KeyboardInterrupt, so that both stop a run the same way: one line, nothing written, exit 128 + 15."""
    exit_status = 143


def os_reason(error):
    """An OSError in a few words: what the system said, and about which file."""
    if not error.strerror:
        return str(error) or type(error).__name__
    return error.strerror + (f": {error.filename}" if error.filename else "")


def _raise_terminated(signum, frame):
    raise Terminated()


def stop_on_sigterm():
    """From now on SIGTERM stops this process as Ctrl-C does (see Terminated)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def interrupts_held():
    """Ctrl-C and SIGTERM held back while the block runs, then raised as they would have been: for a step that
    must not be cut in half, such as starting a child process that must be ended on the way out. Signals come to
    the main thread only: in another thread the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if held:
        signal.raise_signal(held[0])


def interrupt_status(error):
    """Exit status for a KeyboardInterrupt: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return getattr(error, "exit_status", 130)


@contextlib.contextmanager
def one_line_errors(prog, interrupted="nothing was written"):
    """The body of program `prog`: an error it raises ends the program with one line and an exit status — 2 for a
    UsageError, 1 for a DataError, a TrainingError or an OSError, 130 on Ctrl-C and 143 on SIGTERM. `interrupted`
    (text, or a function giving it) says what an interrupt left behind, unless the interrupt itself says (its
    `left_behind`: one that came as a run was being put in place). Every program of the project ends through here."""
    stop_on_sigterm()
    try:
        yield
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (DataError, TrainingError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:  # one that no caller named (writes, MNIST and the cluster name theirs): the system's words
        print(f"{prog}: error: {os_reason(e)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as stop:
        left = getattr(stop, "left_behind", None) or (interrupted() if callable(interrupted) else interrupted)
        print(f"\n{prog}: interrupted; {left}", file=sys.stderr)
        sys.exit(interrupt_status(stop))


def run_main(prog, main, interrupted="nothing was written"):
    """`main()` run as the body of program `prog` (one_line_errors): its exit status, main's own (None counts as 0)
    or the error's."""
    try:
        with one_line_errors(prog, interrupted):
            return main() or 0
    except SystemExit as stop:
        return stop.code
