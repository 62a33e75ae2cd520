"""`make ablation`: every row lab/report.py's ablation tables can show is a variant the Makefile runs, and a variant that
fails is named and fails the target after the table is written. The step runs are a stand-in PYTHON: no training."""
import importlib
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch.nn as nn

from lab import code_words, net_of
from common import count_params
from conftest import ROOT, git_history
from harness.cli import settings_meant_by
from lab import report

STAND_IN = """#!/bin/bash
# A stand-in for python: records its command line; a variant's run writes its seeds.json as a completed seeds run
# does (replaced whole), and exits 1 without writing it (--crash), or 1 after writing it (--missed: short of the
# step's seed rule). The file gets a time long past, as a coarse file-system clock can give it no time after the run's
# start: the Makefile must see that it was written all the same.
echo "$*" >> "$STAND_IN_LOG"
case " $* " in *" lab.report "*) exit 0;; *" --crash "*) exit 1;; esac
out=$(echo "$*" | sed -n 's/.* --out \\([^ ]*\\).*/\\1/p')
mkdir -p "$out" && echo '{}' > "$out/seeds.json.new" && touch -d @1000000000 "$out/seeds.json.new" \
  && mv "$out/seeds.json.new" "$out/seeds.json"
case " $* " in *" --missed "*) exit 1;; esac
"""


def _make(*args, env=None):
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def _variants(step):
    """The Makefile's ABLATIONS_<step> as make reads them: {name: (script, flags)}."""
    result = _make(f"STEP={step}", "--eval", "variants: ; @echo $(ABLATIONS_$(STEP))", "variants")
    assert result.returncode == 0, result.stderr
    variants = {}
    for item in result.stdout.split():
        name, flags = item.split(":", 1)
        flags = flags.split("+") if flags else []
        variants[name] = (flags.pop(0), flags) if flags and flags[0].endswith(".py") else (f"{step}.py", flags)
    return variants


@pytest.mark.committed
def test_each_step_s_rows_are_the_ones_its_makefile_runs_with_the_same_flags_and_seeds():
    """lab/report.py's ABLATION_ROWS and ABLATION_SEEDS are the Makefile's ABLATIONS_<step> and ABLATION_SEEDS_<step>:
    the table shows what `make ablation` makes, in its order, and every row it can show is described."""
    made = set()
    for step in report.ABLATION_DIRS:
        variants = _variants(step)
        assert all(script == f"{step}.py" for script, _ in variants.values()), step  # every row is the step's own net
        assert {name: " ".join(flags) for name, (_, flags) in variants.items()} == report.ABLATION_ROWS[step]
        assert list(variants) == list(report.ABLATION_ROWS[step]), step
        seeds = _make(f"STEP={step}", "--eval", "count: ; @echo $(ABLATION_SEEDS_$(STEP))", "count").stdout.strip()
        assert int(seeds) == report.ABLATION_SEEDS[step], step
        made |= set(variants)
    assert set(report.ABLATIONS) - {"full"} == made  # nothing listed that nothing produces, nothing undescribed


@pytest.fixture
def stand_in(tmp_path):
    python = tmp_path / "python"
    python.write_text(STAND_IN)
    python.chmod(0o755)
    return python, tmp_path / "log.txt"


def _ablation(tmp_path, stand_in, variants):
    python, log = stand_in
    result = _make("ablation", "STEP=model3", f"PYTHON={python}", f"ABLATION_DIR_model3={tmp_path / 'abl'}",
                   f"ABLATIONS_model3={' '.join(variants)}", env=dict(STAND_IN_LOG=str(log)))
    return result, log.read_text().splitlines()


def test_a_failed_variant_is_named_and_fails_the_target_after_the_table(tmp_path, stand_in):
    for name in ("crashed", "missed"):  # an earlier run's: kept by the crash, replaced by the run that missed
        (tmp_path / "abl" / name).mkdir(parents=True)
        (tmp_path / "abl" / name / "seeds.json").write_text("{}")
        os.utime(tmp_path / "abl" / name / "seeds.json", (1e9, 1e9))
    result, calls = _ablation(tmp_path, stand_in, ["ok:--a", "crashed:--crash", "missed:--missed",
                                                   "other:designs.py+--x=1+--y"])
    assert result.returncode != 0, result.stdout + result.stderr
    assert "make ablation: failed: crashed (" in result.stderr and "missed" not in result.stderr
    assert calls[0] == f"model3.py --a --seeds 3 --jobs 1 --out {tmp_path / 'abl' / 'ok'}"
    assert calls[3].startswith("designs.py --x=1 --y --seeds 3 ")  # a variant of another script's net
    assert calls[4] == "-m lab.report --ablation-only" and len(calls) == 5  # every variant ran, then the table
    assert "=== ablation of model3: other (designs.py --x=1 --y) ===" in result.stdout


def test_a_variant_short_of_the_seed_rule_is_a_row_not_a_failure(tmp_path, stand_in):
    result, calls = _ablation(tmp_path, stand_in, ["ok:--a", "missed:--missed"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls[-1] == "-m lab.report --ablation-only" and len(calls) == 3


# ---------------------------------------------------------------------------------------------------------------------
# The committed tables: every Δ against the same recipe, every printed command one that makes its table.

RESULTS = ROOT / "results"
# What a run did about a setting it did not record: made before its flag existed, or after the flag was retired (its
# "off"). The net's own arguments are net.NAME.
OFF = {"test_batch_size": 1000, "weight_decay": 0.0, "label_smoothing": 0.0, "precision": "fp32",
       "channels_last": False, "bn_affine": "channel", "activation": "relu", "ema": 0.0, "teacher": None,
       "optimizer": "sgd", "clean_epochs": 0, "scale": 0.0, "val": 0, "batchnorm": True, "net.dropout": 0.0,
       "init": "torch", "lr_knots": [], "augment_p": 1.0, "brightness": 0.0, "contrast": 0.0}
ACTIVATIONS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky", nn.SiLU: "silu"}


def _did(config):
    """A run's settings as one flat dict, from those it recorded (or those a command means: the same shape), each
    setting it did not record at OFF; without its seed."""
    config = json.loads(json.dumps(config))
    net = config.pop("net_kwargs", None) or {}
    flat = {**OFF, **config, **{f"net.{key}": value for key, value in net.items()}}
    for key in ("seed", "device", "subset"):
        flat.pop(key, None)
    return flat


def _differences(a, b):
    return sorted(key for key in a.keys() | b.keys() if a.get(key, OFF.get(key)) != b.get(key, OFF.get(key)))


def _runs(folder):
    """{seed: metrics.json} of the --seeds run in `folder`."""
    summary = json.loads((folder / "seeds.json").read_text())
    return {r["seed"]: json.loads((folder / "seeds" / f"seed-{r['seed']}" / "metrics.json").read_text())
            for r in summary["seeds"]}


def _made_today(script, flags):
    """(settings, parameters) of the runs `python SCRIPT FLAGS` makes with today's code, the batch norm and
    activation read off the net it builds (a step's net may build them in, with no flag to say so); None where
    today's parser refuses the flags."""
    step = script.removesuffix(".py")
    module = importlib.import_module(step)
    settings = settings_meant_by(flags, module.DEFAULTS)
    if settings is None:
        return None
    made = _did(settings)
    net = net_of(step, [str(flag) for flag in flags])
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    kinds = {"channel" if m.affine else "layer" if list(m.parameters(recurse=False)) else "none" for m in norms}
    if len(kinds) == 1:
        made["bn_affine"] = kinds.pop()
    acts = {("prelu" if m.num_parameters == 1 else "prelu-channel") if isinstance(m, nn.PReLU) else ACTIVATIONS[type(m)]
            for m in net.modules() if isinstance(m, (nn.PReLU, *ACTIVATIONS))}
    if len(acts) == 1:
        made["activation"] = acts.pop()
    return made, count_params(net)


def _kinds_its_fingerprint_tells(run):
    """The kinds (batch norm's, the activation's) a run did not record though it recorded a fingerprint of its net:
    read off the net they would be, but the fingerprint tells the nets apart (a step's net, or public.py's, builds
    them in, with no setting for them). A run with no fingerprint had the only kinds there were then."""
    fingerprinted = bool((run.get("code") or {}).get("fingerprint"))
    return {key for key in ("activation", "bn_affine") if fingerprinted and key not in run["config"]}


def _why_not_made_by(command, folder):
    """Why `command` (`python SCRIPT FLAGS`, a --seeds run) would not make the seeds table in `folder` again with
    today's code, or None where it would: the same settings and net for every run, the same seeds, the same folder."""
    script, *flags = shlex.split(command)[1:]
    made = _made_today(script, flags)
    if made is None:
        return "today's parser refuses its flags"
    settings, params = made
    value = lambda flag, default: next((v for f, v in zip(flags, flags[1:]) if f == flag),  # noqa: E731
                                       next((f.split("=", 1)[1] for f in flags if f.startswith(flag + "=")), default))
    runs, why = _runs(folder), []
    for seed, run in runs.items():
        today = {key: value for key, value in settings.items() if key not in _kinds_its_fingerprint_tells(run)}
        if _differences(_did(run["config"]), today) or run["params"] != params:
            why.append(f"seed {seed}: {_differences(_did(run['config']), today)} differ, {run['params']} "
                       f"parameters against {params} today")
    first, count = int(value("--seed", 1)), int(value("--seeds", 1))
    if sorted(runs) != list(range(first, first + count)):
        why.append(f"it runs seeds {first}-{first + count - 1}, the table has {sorted(runs)}")
    out = value("--out", f"results/{script.removesuffix('.py')}")
    if (ROOT / out).resolve() != folder.resolve():
        why.append(f"it writes to {out}")
    return "; ".join(why[:1] + why[-1:] if len(why) > 2 else why) or None


def _tables(step):
    """(rows, the Makefile's variants, or None) of each ablation table of `step` the report renders, its measured rows
    only, each with its folder: the table `make ablation` makes (a row's folder as the Makefile names it), then the
    step's history table."""
    rows = [dict(r, folder=str(RESULTS / step if r["variant"] == "full" else
                               RESULTS / report.ABLATION_DIRS[step] / r["variant"]))
            for r in report.ablation_rows(RESULTS, step) if r.get("measured", True)]
    yield rows, _variants(step)
    yield [r for r in report.history_rows(RESULTS, step) if r["measured"]], None


@pytest.mark.parametrize("step", ["model3", "model4"])
@pytest.mark.committed
def test_every_change_row_is_one_change_to_its_own_table_s_first_row(step):
    """Each Δ is against the same recipe: a row's runs recorded the settings of its table's "nothing changed" row
    (the first) on the same seeds, but for what its change sets — the flags `make ablation` runs it with, or for a
    history row the settings it says it changes."""
    for rows, variants in _tables(step):
        if not rows:
            continue
        base = _runs(Path(rows[0]["folder"]))
        for row in rows[1:]:
            if variants is not None:  # what the row's flags set, against the step's defaults (another net: "net")
                script, flags = variants[row["variant"]]
                before, after = _made_today(f"{step}.py", []), _made_today(script, flags)
                allowed = set(_differences(before[0], after[0])) | ({"net"} if script != f"{step}.py" else set())
            else:
                allowed = set(row["sets"])
            for seed, run in _runs(Path(row["folder"])).items():
                assert seed in base, f"{step} {row['variant']}: seed {seed} is not one of its first row's"
                changed = _differences(_did(run["config"]), _did(base[seed]["config"]))
                unrecorded = _kinds_its_fingerprint_tells(run) | _kinds_its_fingerprint_tells(base[seed])
                changed = [key for key in changed if key not in unrecorded]
                outside = [key for key in changed if key not in allowed
                           and not (key.startswith("net.") and "net" in allowed)]
                assert not outside, (f"{step} {row['variant']} seed {seed}: {changed} differ from its table's first "
                                     f"row ({rows[0]['variant']}), where its change sets {sorted(allowed)}")


@pytest.mark.parametrize("step", ["model3", "model4"])
@pytest.mark.committed
def test_the_table_make_ablation_makes_has_its_rows_at_its_seeds_count_with_its_flags(step):
    """`make ablation STEP=...` makes every measured row of its table again: the Makefile's flags mean, with today's
    code, the settings each row's runs recorded, over ABLATION_SEEDS seeds."""
    result = _make(f"STEP={step}", "--eval", "count: ; @echo $(ABLATION_SEEDS_$(STEP))", "count")
    count = int(result.stdout.strip())
    rows, variants = next(_tables(step))
    for row in rows[1:]:
        script, flags = variants[row["variant"]]
        command = f"python {script} {' '.join(flags)} --seeds {count} --out {row['folder']}"
        assert row["seeds"] == count, f"{step} {row['variant']}: {row['seeds']} seeds, `make ablation` runs {count}"
        assert _why_not_made_by(command, Path(row["folder"])) is None, (step, row["variant"])


@pytest.mark.committed
def test_every_seeds_table_s_command_makes_it_today_or_its_commit_is_named():
    """The command printed under a seeds table is the one that made it: with today's code it makes the table's runs
    again (same settings, net, seeds and folder), or RESULTS.md prints it with the table's folder, and every line
    that does names the commit where it does (`git checkout SHA`)."""
    text = report.results_markdown(RESULTS)
    found = sorted(p.parent for p in RESULTS.rglob("seeds.json") if p.parent.parent.name != "seeds")
    assert len(found) >= 10
    for folder in found:
        command = json.loads((folder / "seeds.json").read_text())["command"]
        why = _why_not_made_by(command, folder)
        if why is None:
            continue
        where = re.compile(re.escape(folder.relative_to(ROOT).as_posix()) + r"(?![\w/-])")
        lines = [line for line in text.splitlines() if f"`{command}`" in line and where.search(line)]
        assert lines, f"{folder.relative_to(ROOT)}: `{command}` does not make it today ({why}), and RESULTS.md " \
                      "does not print it, with its folder, and the commit that made it"
        for line in lines:
            sha = re.search(r"git checkout ([0-9a-f]{7,40})\b", line)
            assert sha, f"{folder.relative_to(ROOT)}: `{command}` does not make it today ({why}); printed without " \
                        f"its commit: {line[:200]}"
            if git_history():
                assert subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{sha[1]}^{{commit}}"]).returncode \
                    == 0, f"{sha[1]} is no commit of this repository"


def _claims():
    """The runs the README's, RESULTS.md's and the steps' claims stand on, by folder: each step's run and --seeds
    runs (results/STEP, its seeds-A-B), the rows of today's ablation tables (but for a row made at an earlier
    commit, which its table names: RESULTS.md says so), the 99 % club's ten seeds and the published nets' runs."""
    folders = [RESULTS / step for step in ("model1", "model2", "model2-no-batchnorm", "model3", "model4")]
    folders += sorted(RESULTS.glob("model[34]/seeds-*"))
    folders += [Path(row["folder"]) for step in ("model3", "model4") for row in report.ablation_rows(RESULTS, step)
                if row.get("measured") and row["variant"] != "full" and not row.get("commit")]
    folders += sorted(RESULTS.glob("frontier/runs/designs-1218/seed-*"))
    folders += sorted(path.parent for path in RESULTS.glob("public/*/*/seeds.json"))  # the README's standing sentence
    return folders


@pytest.mark.committed
def test_every_run_a_claim_stands_on_is_today_s_code():
    """Each run the published claims stand on records the code today's files make of its command (the fingerprint
    of its net and training path: harness/provenance.py), or was shown by lab/vouch.py to be made by code that
    computes the same; a mismatch names the folder and the command that makes it again."""
    wrong = []
    for folder in _claims():
        runs = [folder / "metrics.json"] if (folder / "metrics.json").is_file() else []
        runs += sorted((folder / "seeds").glob("seed-*/metrics.json"))
        for path in runs:
            metrics = json.loads(path.read_text())
            words = code_words(metrics.get("code"), metrics["command"])
            if words:
                table = folder / "seeds.json"
                again = json.loads(table.read_text())["command"] if path.parent.parent.name == "seeds" and \
                    table.is_file() else metrics["command"]
                wrong.append(f"{path.parent.relative_to(ROOT)}: {words}; `{again}` makes it again")
    assert not wrong, "\n".join(wrong[:5] + ([f"… and {len(wrong) - 5} more"] if len(wrong) > 5 else []))
