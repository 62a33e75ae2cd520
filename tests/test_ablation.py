"""`make ablation`: every row lab/report.py's ablation tables can show is a variant the Makefile runs, and a variant that
fails is named and fails the target after the table is written. The step runs are a stand-in PYTHON: no training."""
import json
import os
import subprocess

import pytest

from common import count_params
from conftest import ROOT
from lab import frontier, report

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


def test_every_ablation_row_the_report_knows_is_one_the_makefile_runs():
    variants = {step: _variants(step) for step in report.ABLATION_DIRS}
    made = {name for names in variants.values() for name in names}
    assert set(report.ABLATIONS) - {"full"} == made  # nothing listed that nothing produces, nothing undescribed
    for step, names in variants.items():  # the table's order is the report's
        assert list(names) == [name for name in report.ABLATIONS if name in names], step
    # step 4's rows of other nets have their command, and it builds the net of the committed row
    committed = {row["variant"]: row["params"] for row in json.loads(
        (ROOT / "results" / report.ABLATION_DIRS["model4"] / "ablation.json").read_text())}
    for name in ("round-4-net", "round-5-net", "round-6-net", "round-8-net"):
        script, flags = variants["model4"][name]
        assert count_params(frontier.net_of(script.removesuffix(".py"), flags)) == committed[name], name


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
