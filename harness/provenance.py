"""Which code made a run. Every run records its commit, the files among those that decide its numbers that had
uncommitted changes, and a fingerprint of its code; a sweep reuses a completed run only when today's code has the
same fingerprint (harness.runs.reuse), so a learner who edits a net and runs it over seeds sees the edited code's
numbers, never the committed runs of the code before.

The fingerprint is a hash of two things, each written as text that is the same on any machine:
- the net as built: every layer with its kernel, stride, padding, dilation and groups (PyTorch's own description
  of the module tree), and the shape of every parameter and buffer;
- the training path: the source of every function and class of this project that the run's roots reach (the data's
  loading and statistics, `common.fit` and all it calls, the update, the schedule, the evaluation), and of every
  class of the project among the net's layers (its `Net`, `LayerBatchNorm`), followed name by name through the
  modules they are written in, with the value of each plain constant they read (TEST_BATCH_SIZE, a step's DEFAULTS).
  Each is parsed and written back without its docstrings (ast.unparse), so a comment, a docstring or the layout of a
  line changes nothing, and any edit of what the code does changes the fingerprint.

The text is the same on any machine with the same Python and torch (ast.unparse and PyTorch's layer descriptions are
theirs: another version may write them otherwise, and then the fingerprint differs, which errs on the safe side).
What it cannot see: code outside the project (torch, its version recorded beside; numpy), a change reached only
through an attribute of an object rather than a name (a method called on an argument whose class no root names), the
data files themselves (the run records where they came from), and the machine (the same code gives other last
digits on another CPU kind: the run records its device). Its `parts` say which piece changed.

Runs made before fingerprints existed recorded none. Where the code that made one was shown to compute the same
histories as today's (lab/vouch.py: old and new code on the same machine), its metrics.json now names today's
fingerprint and says how it was shown ("shown_same"); every other is made by unknown code, and records the commit
that made it where the project's history tells it.
"""
import ast
import hashlib
import inspect
import json
import subprocess
import sys
import textwrap
import types
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = ("tests", ".venv", "venv", "site-packages")  # folders under ROOT that are not the project's code
PLAIN = (int, float, str, bool, type(None))


def ours(thing):
    """The file of this project that defines `thing` (a function, class or module), or None."""
    try:
        source = inspect.getsourcefile(thing)
    except TypeError:  # a builtin
        return None
    if source is None:
        return None
    path = Path(source).resolve()
    if ROOT not in path.parents or any(part in OUTSIDE for part in path.relative_to(ROOT).parts):
        return None
    return path


def plain_value(value):
    """A constant whose repr is its value on any machine: numbers, strings, and containers of them."""
    if isinstance(value, PLAIN):
        return True
    if isinstance(value, (tuple, list, frozenset)):
        return all(plain_value(v) for v in value)
    if isinstance(value, dict):
        return all(plain_value(k) and plain_value(v) for k, v in value.items())
    return False


def without_docstrings(tree):
    """The syntax tree with the docstring of every module, class and function taken out (a body left empty gets
    `pass`), so that documentation never changes a fingerprint."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def referenced(tree, namespace):
    """The objects `tree`'s code names, looked up in `namespace` (its module's globals): each plain name, and each
    dotted name that starts at a module of this project (cuda_graph.graphed)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in namespace:
            found.append((node.id, namespace[node.id]))
        elif isinstance(node, ast.Attribute):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and isinstance(namespace.get(base.id), types.ModuleType):
                value = namespace[base.id]
                for attr in reversed(chain):
                    if not (isinstance(value, types.ModuleType) and ours(value)) or not hasattr(value, attr):
                        break
                    value = getattr(value, attr)
                    found.append((attr, value))
    return found


def label(thing, file):
    """How a part is named: `common.py:fit`, by file rather than module, so that a step run as a script (its module
    is __main__) and the same step imported by a driver give the same names."""
    return f"{file.relative_to(ROOT).as_posix()}:{thing.__qualname__}"


@lru_cache(maxsize=None)
def code_parts(roots):
    """{part name: its source without docstrings, or a constant's repr} for every function and class of the project
    that `roots` (a tuple of functions and classes) reach, name by name."""
    parts, pending, seen = {}, list(roots), set()
    while pending:
        thing = inspect.unwrap(pending.pop())  # a decorated function's own code (evaluate's, under inference_mode)
        file = ours(thing)
        if id(thing) in seen or file is None:
            continue
        seen.add(id(thing))
        try:
            tree = without_docstrings(ast.parse(textwrap.dedent(inspect.getsource(thing))))
        except (OSError, SyntaxError):  # no source to read, or a lambda's line that does not parse alone
            parts[label(thing, file)] = repr(thing.__code__.co_code) if hasattr(thing, "__code__") else ""
            continue
        parts[label(thing, file)] = ast.unparse(tree)
        module = sys.modules.get(thing.__module__)
        namespace = vars(module) if module else getattr(thing, "__globals__", {})
        for name, value in referenced(tree, namespace):
            if inspect.isfunction(value) or inspect.isclass(value):
                pending.append(value)
            elif plain_value(value) and not isinstance(value, types.ModuleType):
                module_file = ours(module) if module else None
                if module_file and name in namespace and namespace[name] is value:
                    parts[f"{module_file.relative_to(ROOT).as_posix()}:{name}"] = repr(value)
    return parts


def net_text(net):
    """The net as built: PyTorch's description of every layer (kernel, stride, padding, dilation, groups, bias,
    batch norm's settings), then every parameter's and buffer's name and shape."""
    shapes = [f"{name} {tuple(tensor.shape)}" for name, tensor in [*net.named_parameters(), *net.named_buffers()]]
    return "\n".join([repr(net), *shapes])


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint_parts(net, roots):
    """{part: digest}: "net" for the net as built, and one entry for each piece of the training path (code_parts
    from `roots` and from the project's classes among the net's layers)."""
    classes = tuple(dict.fromkeys(type(module) for module in net.modules() if ours(type(module))))
    roots = tuple(roots)
    parts = {"net": digest(net_text(net))}
    parts.update({name: digest(text) for name, text in sorted(code_parts(roots + classes).items())})
    return parts


def fingerprint(parts):
    """One digest of all the parts: equal when, and only when, every part is."""
    return digest(json.dumps(parts, sort_keys=True))


def git(*args):
    """`git args...` in the project's folder: its output, or None outside a checkout (or without git)."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def checkout_state(files=("*.py",)):
    """{"commit": the checkout's HEAD, "uncommitted": the files among `files` that differ from it}, both None outside
    a git checkout: what a driver's table (a search, the frontier, the bench) records of the code that made it."""
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", *files) if commit else None
    return dict(commit=commit.strip() if commit else None,
                uncommitted=None if status is None else sorted(line[3:] for line in status.splitlines()))


def code_record(net, roots):
    """What a run records of its code: {"fingerprint", "parts", "commit", "uncommitted"}. `commit` is the checkout's
    HEAD and `uncommitted` the files among those that hold the parts that differ from it (an empty list: none);
    both None outside a git checkout."""
    parts = fingerprint_parts(net, roots)
    files = sorted({name.split(":", 1)[0] for name in parts if ":" in name})
    return dict(fingerprint=fingerprint(parts), parts=parts, **checkout_state(files))


def code_of_run(metrics):
    """(fingerprint, parts) of the code that made a run, as its metrics.json records them; (None, None) for a run
    made by unknown code. A run made before fingerprints existed records one only where lab/vouch.py showed that
    the code that made it computes the same histories as today's (its "shown_same" says how)."""
    code = metrics.get("code") if isinstance(metrics, dict) else None
    if isinstance(code, dict) and code.get("fingerprint"):
        return code["fingerprint"], code.get("parts")
    return None, None


def what_differs(then, now):
    """The parts that differ between two runs' code, in a few words: "net, model3.py:Net"."""
    if not then or not now:
        return ""
    names = sorted((name for name in set(then) | set(now) if then.get(name) != now.get(name)),
                   key=lambda name: (name != "net", name))  # the net as built first, then the code by file
    shown = ", ".join(name.removeprefix("common.py:") for name in names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")
