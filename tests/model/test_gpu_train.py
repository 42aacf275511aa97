"""benchmarks/gpu_train.sh, the prepared GPU training call, in its CPU smoke mode: corpus, training, files back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_train_script_builds_trains_and_brings_back_a_loadable_model(tmp_path):
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    wheels, out = tmp_path / "whl", tmp_path / "out"
    wheels.mkdir()
    out.mkdir()
    (wheels / "COMMIT").write_text("abc1234\n")  # what --fetch records; no wheels: this venv has them installed
    env = {**os.environ, "OUT": str(out), "DGLS_PYTHON": sys.executable, "DGLS_WHEEL_DIR": str(wheels),
           "DGLS_TRAIN_SMOKE": "1", "DGLS_TRAIN_BUDGET_S": "300", "DGLS_TRAIN_SIZE": "32 2 64 2 1 16",
           "DGLS_TRAIN_BATCH": "4"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_train.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    session = (out / "session.txt").read_text()
    assert "corpus: exit 0 in" in session and "train: exit 0 in" in session, session
    assert "failed steps: none" in session and "commit: abc1234" in session
    assert "/src/dgls/model/" in session  # dgls.model came from the links, not from an installed copy

    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16 * 2**20 for f in files), files
    assert "SUMMARY" in (out / "train.log").read_text()

    model = tmp_path / "model"
    model.mkdir()
    with tarfile.open(out / "meta.tar.gz") as tar:
        tar.extractall(model, filter="data")
    for f in out.glob("model*.safetensors"):
        (model / f.name).write_bytes(f.read_bytes())
    summary = json.loads((model / "corpus_summary.json").read_text())
    held = {x for x in (ROOT / "model" / "corpus_heldout.txt").read_text().splitlines() if x and x[0] != "#"}
    trained_on = {p.split(":", 1)[1] for p in summary["train_packages"] + summary["heldout_packages"]}
    assert summary["files"]["train"] > 100 and "json" in trained_on
    assert not trained_on & held  # the shipped model's held-out packages stay unseen
    run = json.loads((model / "run_config.json").read_text())
    assert run["train_config"]["save_dtype"] == "bfloat16" and run["summary"]["steps"] > 0

    from dgls.model.loading import load_model

    loaded = load_model(model, device="cpu")
    assert loaded.model.config.get_text_config().hidden_size == 32
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == status, "the training script must leave the tree as it was"
