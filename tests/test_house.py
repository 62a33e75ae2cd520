"""The layout holds: harness/ is machinery that imports downwards only, and the loop a learner reads is the one
that runs."""
import ast

import pytest
import torch

import common
import model3
from conftest import ROOT
from harness import cli

# harness's modules from the bottom up: each may import only those before it.
LAYERS = ["errors", "files", "layers", "mnist", "cli", "provenance", "cuda_graph", "runs"]


def _imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "harness":
                names |= {f"harness.{alias.name}" for alias in node.names}
    return names


def test_harness_imports_downwards_only():
    on_disk = {path.stem for path in (ROOT / "harness").glob("*.py")} - {"__init__"}
    assert on_disk == set(LAYERS), "a new module of harness/ needs its place in LAYERS"
    project = {path.stem for path in ROOT.glob("*.py")} | {"lab"}  # common, the steps, the page, the lab
    for index, name in enumerate(LAYERS):
        imported = _imports(ROOT / "harness" / f"{name}.py")
        assert not imported & project, f"harness/{name}.py imports {imported & project}"
        inside = {module.split(".")[1] for module in imported if module.startswith("harness.")}
        assert inside <= set(LAYERS[:index]), f"harness/{name}.py imports {inside - set(LAYERS[:index])} from above"


def test_the_top_level_is_the_exercise_and_the_lab_sits_above_it():
    """The card's top level: the four steps, common.py, and the scripts a learner runs as steps of the lab (the page,
    the other layouts, the published nets); the drivers live in lab/, and nothing of the exercise or of harness/
    imports them."""
    assert {path.name for path in ROOT.glob("*.py")} == {
        "model1.py", "model2.py", "model3.py", "model4.py", "common.py", "demo.py", "designs.py", "public.py"}
    lab = {f"lab.{path.stem}" for path in (ROOT / "lab").glob("*.py")} | {"lab"}
    for path in [*ROOT.glob("*.py"), *(ROOT / "harness").glob("*.py")]:
        imported = {name for name in _imports(path) if name == "lab" or name.startswith("lab.")}
        assert not imported, f"{path.name} imports {imported}: the exercise must not lean on the lab"
    assert lab > {"lab.report", "lab.search", "lab.frontier", "lab.bench"}


def test_fit_on_the_cpu_runs_the_loop_as_written(mnist, monkeypatch):
    """Off CUDA, fit trains with common.train_step as written: no graphed update is made, and every training
    batch's loss goes through its cross_entropy."""
    monkeypatch.setattr(common.cuda_graph, "graphed", lambda *args, **kwargs: pytest.fail("the GPU's path on the CPU"))
    batches, plain = [], common.F.cross_entropy
    monkeypatch.setattr(common.F, "cross_entropy", lambda logits, y, **kwargs: (
        batches.append(len(y)) if logits.requires_grad else None) or plain(logits, y, **kwargs))
    config = cli.config_from_args(cli.build_parser("model3", model3.DEFAULTS, "").parse_args(
        ["--device", "cpu", "--epochs", "1", "--subset", "200", "--batch-size", "64"]))
    trained = common.fit(model3.Net, config, mnist, log=lambda *_: None)
    assert batches == [64, 64, 64, 8] and len(trained.history) == 1
    assert isinstance(trained.model, model3.Net) and trained.setup_seconds == 0.0
    assert torch.equal(trained.labels, mnist["test"][1][:200])


def test_the_loop_holds_the_textbook_update_in_one_function():
    """The five lines a learner looks for are train_step's, in their order, and written nowhere else in the code a
    step runs (common.py, harness/): a GPU records that same function."""
    common_source = (ROOT / "common.py").read_text()
    source = ast.get_source_segment(common_source, next(
        node for node in ast.parse(common_source).body if getattr(node, "name", "") == "train_step"))
    lines = [line.strip() for line in source.splitlines()]
    textbook = ("optimizer.zero_grad(", "logits = model(x)", "loss = F.cross_entropy(", "loss.backward()",
                "optimizer.step()")
    order = [next(i for i, line in enumerate(lines) if line.startswith(text)) for text in textbook]
    assert order == sorted(order)
    loop = ast.get_source_segment(common_source, next(
        node for node in ast.parse(common_source).body if getattr(node, "name", "") == "train_epoch"))
    assert "train_step)(model, optimizer, x, y)" in loop and "scheduler.step()" in loop
    for path in [ROOT / "common.py", *(ROOT / "harness").glob("*.py")]:
        text = path.read_text()
        for line in ("loss = F.cross_entropy(", ".backward()", "optimizer.step()"):
            assert text.count(line) == (1 if path.name == "common.py" else 0), f"{line} in {path.name}"


def _function(source, name):
    return next(node for node in ast.parse(source).body if getattr(node, "name", "") == name)


def test_the_way_from_a_step_to_its_update_is_run_step_fit_train_epoch_train_step():
    """A reader of `python model3.py` walks run_step → fit → train_epoch → train_step, each calling the next by name,
    and nothing on the way is defined inside another function."""
    source = (ROOT / "common.py").read_text()
    for caller, callee in (("run_step", "fit"), ("fit", "train_epoch"), ("train_epoch", "train_step")):
        node = _function(source, caller)
        called = {getattr(n.func, "id", None) for n in ast.walk(node) if isinstance(n, ast.Call)}
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        assert callee in called | names, f"{caller} does not call {callee}"
        nested = [n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n is not node]
        assert not nested, f"{caller} defines {nested} inside it"
