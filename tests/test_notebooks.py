"""Every notebook template runs under papermill at the smoke profile; bad parameters fail early."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import pytest

from conftest import REPO, WEIGHTS_DIR

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NOISE = re.compile(r"cuInit|oneDNN|absl::InitializeLog|cuda_platform|cpu_feature_guard|cudart_stub")


def _execute(nb: Path, tmp_path: Path, **params) -> nbformat.NotebookNode:
    out = tmp_path / f"{nb.stem}.out.ipynb"
    papermill.execute_notebook(
        str(nb), str(out), parameters=params,
        cwd=str(REPO), kernel_name="python3", progress_bar=False, log_output=False,
    )  # fmt: skip
    return nbformat.read(out, as_version=4)


def _texts(nb, kind: str) -> list[str]:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if kind == "stderr" and o.get("output_type") == "stream" and o.get("name") == "stderr":
                out.append(o.get("text", ""))
            if kind == "markdown" and "text/markdown" in o.get("data", {}):
                out.append(o["data"]["text/markdown"])
            if kind == "image" and "image/png" in o.get("data", {}):
                out.append(o["data"]["image/png"])
    return out


@pytest.mark.notebooks
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_profile(nb, tmp_path, smoke_runs, request):
    chapter = smoke_runs / nb.stem
    # The chapters' studies are trained once per test run (conftest) and checked end to end by
    # test_similarity / test_crossover; the notebooks below must reuse them, not train them again.
    shared = {"02_negative_transfer": {"similarity": 12, "../03_finetune/crossover": 8},
              "03_finetune": {"crossover": 8}}.get(nb.stem, {})
    for study in shared:
        request.getfixturevalue(f"smoke_{study.rsplit('/', 1)[-1]}")
    started = time.time()
    try:
        executed = _execute(nb, tmp_path, profile="smoke", out_dir=str(chapter))
    except papermill.PapermillExecutionError as e:
        # Like the real-data tests: without ../shared/data/weights and offline, the chapters that
        # reuse ImageNet features cannot run here. They stop in their first cell, naming the file.
        if e.ename == "WeightsUnavailableError" and not WEIGHTS_DIR.is_dir():
            pytest.skip(f"{nb.name} needs ImageNet weights: not in {WEIGHTS_DIR} and not downloadable ({e.evalue[:160]})")
        raise
    stderr = "".join(_texts(executed, "stderr"))
    assert not NOISE.search(stderr), f"TensorFlow log noise in {nb.name}: {NOISE.search(stderr).group(0)}"
    assert len(_texts(executed, "image")) >= 1, f"{nb.name} drew no figure"
    # Structure: Overview, Prerequisites, Summary, What's next; the summary is computed, not canned.
    headings = "\n".join(c.source for c in executed.cells if c.cell_type == "markdown")
    for h in ("## Overview", "## Prerequisites", "## Summary", "## What's next"):
        assert h in headings, f"{nb.name} lacks a '{h}' section"
    summary = _texts(executed, "markdown")
    assert summary and re.search(r"\d", summary[-1]), f"{nb.name}: the summary shows no numbers from the run"
    # The Summary cell left the chapter's typed summary, and it renders the chapter's results section.
    from eurosat_lib import summaries

    typed = summaries.load_summary(chapter, nb.stem)
    assert typed is not None, f"{nb.name} wrote no {summaries.summary_file(nb.stem)}"
    assert typed.render_markdown("`source`").startswith("## "), nb.name
    if nb.stem != "00_data":
        records = list(chapter.rglob("record.json"))
        # its own runs, trained by this execution (another chapter may have left some in this folder)
        assert any(r.stat().st_mtime >= started for r in records), f"{nb.name} wrote no run records"
        assert all(json.loads(r.read_text())["status"] == "complete" for r in records)
        # Smoke runs skip per-epoch checkpoints (training.fit_phase(checkpoints=False)) but still
        # record every finished phase, so a re-run reuses them.
        assert not list(chapter.rglob("checkpoints")), f"{nb.name}: smoke runs wrote per-epoch checkpoints"
        for state in chapter.rglob("state.json"):
            done = json.loads(state.read_text())["completed"]
            assert done and all((state.parent / f"phase_{name}.weights.h5").is_file() for name in done), state
    for study, n in shared.items():
        # the notebook asked for the very runs the fixture trained: it reused them all
        records = list((chapter / study).rglob("record.json"))
        assert len(records) == n and all(r.stat().st_mtime < started for r in records), f"{nb.name} trained {study} again"


def _first_code_after_parameters(nb) -> int:
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    for i in code:
        tags = nb.cells[i].metadata.get("tags", [])
        if "injected-parameters" in tags:
            return next(j for j in code if j > i)
    raise AssertionError("no injected-parameters cell")


@pytest.mark.notebooks
def test_bad_parameters_fail_in_the_first_cell(tmp_path):
    """Through papermill, a bad value stops the first cell, named. (Which values are refused,
    and how each is named, is tested in-process: test_experiments.test_bad_parameters_are_named.)"""
    nb = REPO / "notebooks" / "03_finetune.ipynb"
    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(nb), str(out), parameters={"lr_finetune": -0.1}, cwd=str(REPO), kernel_name="python3", progress_bar=False)
    message = r"parameter 'lr_finetune' must be a positive number, got -0\.1 .*-p lr_finetune <value>"
    assert e.value.ename == "ParameterError" and re.search(message, e.value.evalue), e.value.evalue
    executed = nbformat.read(out, as_version=4)
    failed = [i for i, c in enumerate(executed.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert failed == [_first_code_after_parameters(executed)]


@pytest.mark.notebooks
def test_a_misspelled_parameter_fails_in_the_first_cell(tmp_path):
    """`papermill notebooks/03_finetune.ipynb out.ipynb -p profile smoke -p backbonee VGG16` used to
    exit 0 and train the default backbone (papermill only logs "Passed unknown parameter")."""
    nb = REPO / "notebooks" / "03_finetune.ipynb"
    out, runs = tmp_path / "out.ipynb", tmp_path / "runs"
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(nb), str(out), parameters={"profile": "smoke", "backbonee": "VGG16", "out_dir": str(runs)},
                                   cwd=str(REPO), kernel_name="python3", progress_bar=False)  # fmt: skip
    message = r"unknown parameter\(s\) \['backbonee'\] for 03_finetune \('backbonee': did you mean 'backbone'\?\)"
    assert e.value.ename == "ParameterError" and re.search(message, e.value.evalue), e.value.evalue
    executed = nbformat.read(out, as_version=4)
    failed = [i for i, c in enumerate(executed.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert failed == [_first_code_after_parameters(executed)]
    assert not runs.exists(), "nothing may train after a misspelled parameter"


@pytest.mark.notebooks
def test_card_command_fails_fast_offline_naming_the_weights_file(tmp_path):
    """`papermill notebooks/03_finetune.ipynb out.ipynb -p backbone EfficientNetB0`, exactly, offline."""
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras"), EUROSAT_WEIGHTS_DIR=str(tmp_path / "none"))
    t0 = time.perf_counter()
    r = subprocess.run(
        [str(Path(sys.executable).parent / "papermill"), "notebooks/03_finetune.ipynb", str(tmp_path / "out.ipynb"),
         "-p", "backbone", "EfficientNetB0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    if r.returncode == 0:  # a machine with internet access downloaded the weights: that is fine too
        pytest.skip("EfficientNetB0 weights were downloadable here")
    assert "efficientnetb0_notop.h5" in r.stderr and "-p weights none" in r.stderr, r.stderr[-3000:]
    assert elapsed < 120
