"""The backend in settings and on the command line: parsing, errors, `dgls infill --backend vllm`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgls.model.remote import load_vllm
from dgls.settings import BackendSettings, Settings, parse_settings

REPO = Path(__file__).parents[2]


def test_backend_settings_parse_with_unknown_keys_ignored():
    raw = {
        "dgls": {
            "model": "/ckpt/diffusiongemma-26b",
            "backend": {
                "kind": "vllm",
                "url": "http://gpu-box:8000/",
                "model": "google/diffusiongemma-26b",
                "apiKeyEnv": "TEAM_KEY",
                "timeoutMs": 3000,
                "colour": "blue",
            },
        }
    }
    settings, problems = parse_settings(raw)
    assert problems == []
    assert settings.backend == BackendSettings(
        kind="vllm",
        url="http://gpu-box:8000",
        model="google/diffusiongemma-26b",
        api_key_env="TEAM_KEY",
        timeout_ms=3000,
    )
    remote = settings.remote_options()
    assert remote.tokenizer == "/ckpt/diffusiongemma-26b"  # no backend.tokenizer: the model setting's folder
    assert remote.timeout_s == 3.0 and remote.api_key_env == "TEAM_KEY"
    assert settings.to_json()["backend"]["apiKeyEnv"] == "TEAM_KEY"
    assert Settings().remote_options() is None
    assert settings.engine_fields() != Settings().engine_fields()  # switching backends reloads the engine


@pytest.mark.parametrize(
    "backend, message",
    [
        ({"kind": "tgi", "url": "http://a:1"}, "backend.kind: expected one of 'local', 'vllm'"),
        ({"kind": "vllm", "url": "gpu-box:8000"}, "backend.url: expected an http:// or https:// URL"),
        ({"kind": "vllm"}, "backend.url: required when backend.kind is 'vllm'"),
        ({"kind": "vllm", "url": "http://a:1", "apiKeyEnv": "KEY=sk-123"}, "backend.apiKeyEnv: expected the name"),
        ({"kind": "vllm", "url": "http://a:1", "timeoutMs": 0}, "backend.timeoutMs: expected an integer >= 100"),
        ("vllm", "backend: expected an object"),
    ],
)
def test_bad_backend_settings_give_one_clear_message_each(backend, message):
    settings, problems = parse_settings({"backend": backend})
    assert any(p.startswith(message) for p in problems), problems
    assert "sk-123" not in " ".join(problems)
    if isinstance(backend, dict) and backend.get("kind") == "vllm" and "url" not in backend:
        assert settings.backend.kind == "local"


def test_plain_http_off_loopback_is_logged_and_reported_as_unencrypted(caplog):
    caplog.set_level(logging.WARNING)
    from dgls.model.remote import RemoteOptions

    inf = load_vllm(RemoteOptions(url="http://192.0.2.7:8000", tokenizer="dgls-tiny"))
    assert inf.status()["unencrypted"] is True
    inf.close()
    assert "unencrypted" in caplog.text


def dgls(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dgls.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})},
    )


def test_dgls_infill_through_the_vllm_backend(stub, tmp_path):
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return \n\n\nprint(add(1, 2))\n")
    stub.faults.append("script:a + b")
    proc = dgls(
        "infill",
        str(src),
        "--line",
        "2",
        "--col",
        "12",
        "--json",
        "--backend",
        "vllm",
        "--backend-url",
        stub.url,
        "--backend-model",
        "dgls-tiny",
        "--tokenizer",
        "dgls-tiny",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (
        out["middle"] == out["raw_middle"] == "a + b"
        and out["edits"][0]["text"] == "a + b"
        and out["prefix_cache"] == "remote"
    )
    assert stub.requests[-1]["body"]["model"] == "dgls-tiny"


def test_dgls_infill_with_the_server_down_is_one_line_not_a_traceback(tmp_path):
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return \n")
    proc = dgls(
        "infill",
        str(src),
        "--line",
        "2",
        "--col",
        "12",
        "--backend",
        "vllm",
        "--backend-url",
        "http://127.0.0.1:9",
        "--tokenizer",
        "dgls-tiny",
    )
    assert proc.returncode == 2
    assert "connection refused" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend-url", "http://a:1"], "need --backend vllm"),
        (["--backend", "vllm", "--backend-url", "a:1"], "backend.url: expected an http:// or https:// URL"),
        (["--backend", "vllm"], "backend.url: required"),
    ],
)
def test_backend_options_are_checked(args, message, tmp_path):
    src = tmp_path / "a.py"
    src.write_text("x = \n")
    proc = dgls("infill", str(src), "--line", "1", "--col", "5", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
