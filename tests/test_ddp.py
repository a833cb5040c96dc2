"""Two real CPU processes (gloo): one probe for all ranks, checkpoints on xai scores, single-process values."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_events

SCRIPT = Path(__file__).with_name("ddp_run.py")


def run(out: Path, mode: str, devices: int) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), mode, str(devices)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / f"{mode}_{devices}.json").read_text())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ddp")
    return out, run(out, "fit", 2)


@pytest.mark.slow
def test_every_rank_explains_the_same_probe(fitted):
    out, _ = fitted
    rank0, rank1 = (torch.load(out / f"probe_rank{r}.pt") for r in (0, 1))
    assert rank0.shape == (8, 1, 16, 16) and torch.equal(rank0, rank1)


@pytest.mark.slow
def test_a_checkpoint_monitoring_an_xai_score_is_the_best_one(fitted):
    out, result = fitted
    scores = [e.value for e in read_events(out / "run").Scalars("xai/ig/deletion_auc")]
    assert len(scores) == 2 and len(result["checkpoints"]) == 1  # save_top_k=1
    saved = torch.load(result["checkpoints"][0], weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert float(state["best_model_score"]) == pytest.approx(min(scores), rel=1e-6)
    assert saved["epoch"] == scores.index(min(scores))
    assert read_events(out / "run").Images("xai/ig/heatmaps")  # pictures from rank zero


@pytest.mark.slow
def test_two_processes_give_the_single_process_scores(fitted):
    out, result = fitted
    shutil.copy(result["checkpoints"][0], out / "model.ckpt")
    two, one = run(out, "validate", 2), run(out, "validate", 1)
    assert {"xai/ig/deletion_auc", "xai/ig/sparseness", "xai/ig/pointing_game", "xai/ig/completeness"} <= set(two)
    assert two.keys() == one.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
