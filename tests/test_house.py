"""The layout holds: harness/ is machinery that imports downwards only, and the loop a learner reads is the one
that runs."""
import ast

import torch

import common
import model3
from conftest import ROOT
from harness import cli

# harness's modules from the bottom up: each may import only those before it.
LAYERS = ["errors", "files", "mnist", "cli", "cuda_graph", "runs"]


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
    """The card's top level: the four steps, common.py, and the two scripts a learner runs (the page, the other
    layouts); the drivers live in lab/, and nothing of the exercise or of harness/ imports them."""
    assert {path.name for path in ROOT.glob("*.py")} == {
        "model1.py", "model2.py", "model3.py", "model4.py", "common.py", "demo.py", "designs.py"}
    lab = {f"lab.{path.stem}" for path in (ROOT / "lab").glob("*.py")} | {"lab"}
    for path in [*ROOT.glob("*.py"), *(ROOT / "harness").glob("*.py")]:
        imported = {name for name in _imports(path) if name == "lab" or name.startswith("lab.")}
        assert not imported, f"{path.name} imports {imported}: the exercise must not lean on the lab"
    assert lab > {"lab.report", "lab.search", "lab.frontier", "lab.bench"}


def test_fit_on_the_cpu_runs_the_plain_step(mnist, monkeypatch):
    """Off CUDA, fit trains with common.TrainBatch as it is: every update goes through its plain `update`."""
    updates = []
    plain = common.TrainBatch.update
    monkeypatch.setattr(common.TrainBatch, "update", lambda self, x, y: updates.append(len(y)) or plain(self, x, y))
    config = cli.config_from_args(cli.build_parser("model3", model3.DEFAULTS, "").parse_args(
        ["--device", "cpu", "--epochs", "1", "--subset", "200", "--batch-size", "64"]))
    trained = common.fit(model3.Net, config, mnist, log=lambda *_: None)
    assert updates == [64, 64, 64, 8] and len(trained.history) == 1
    assert isinstance(trained.model, model3.Net) and trained.setup_seconds == 0.0
    assert torch.equal(trained.labels, mnist["test"][1][:200])
