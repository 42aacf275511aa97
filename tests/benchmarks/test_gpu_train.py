"""benchmarks/gpu_train.sh, the prepared GPU training call, in its CPU smoke mode: corpus, training, files back."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest


@pytest.mark.slow
def test_gpu_train_script_builds_trains_and_brings_back_a_loadable_model(tmp_path, device_script_run):
    root, out = device_script_run.root, device_script_run.out
    env = {
        **device_script_run.env,
        "DGLS_TRAIN_SMOKE": "1",
        "DGLS_TRAIN_BUDGET_S": "300",
        "DGLS_TRAIN_SIZE": "32 2 64 2 1 16",
        "DGLS_TRAIN_BATCH": "4",
    }
    proc = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_train.sh")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    held = {x for x in (root / "model" / "corpus_heldout.txt").read_text().splitlines() if x and x[0] != "#"}
    trained_on = {p.split(":", 1)[1] for p in summary["train_packages"] + summary["heldout_packages"]}
    assert summary["files"]["train"] > 100 and "json" in trained_on
    assert not trained_on & held  # the shipped model's held-out packages stay unseen
    run = json.loads((model / "run_config.json").read_text())
    assert run["train_config"]["save_dtype"] == "bfloat16" and run["summary"]["steps"] > 0

    from dgls.model.loading import load_model

    loaded = load_model(model, device="cpu")
    assert loaded.model.config.get_text_config().hidden_size == 32
    assert device_script_run.tree_as_it_was(), "the training script must leave the tree as it was"
