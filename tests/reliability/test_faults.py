"""Faults: the model cannot load or breaks mid-request, the client vanishes, the client stops reading.

Each time the server answers what it can (every request gets a reply), reports the fault once (one
window/showMessage of type Error, a dgls/status saying what), and recovers (a good model configured later
serves) or exits cleanly (stdin closed: exit code 1 within seconds, even with the model mid-request). The
model faults are real: broken checkpoint files, a checkpoint whose weights are NaN, and, for out-of-memory, the
loader's memory report made too small (the one fault injected by a patch, in a wrapper around the real CLI).
"""

from __future__ import annotations

import json
import shutil
import sys
import time

import pytest
from lsp_driver import RawServer, wait_until

TEXT = "Notes for Monday:\n\n\nBuy milk.\n"
AT = {"line": 1, "character": 0}
URI = "file:///faults/notes.txt"


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def broken(tiny_checkpoint, tmp_path_factory):
    """Checkpoint folders that are broken in one way each."""
    root = tmp_path_factory.mktemp("broken")
    truncated = copy_checkpoint(tiny_checkpoint, root / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    wrong = copy_checkpoint(tiny_checkpoint, root / "wrong-arch")
    cfg = json.loads((wrong / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (wrong / "config.json").write_text(json.dumps(cfg))
    nan = copy_checkpoint(tiny_checkpoint, root / "nan")
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(nan / "model.safetensors")
    save_file(
        {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
        nan / "model.safetensors",
        metadata={"format": "pt"},
    )
    return {
        "missing": str(root / "does-not-exist"),
        "truncated": str(truncated),
        "wrong-arch": str(wrong),
        "nan": str(nan),
    }


def errors_shown(server: RawServer) -> list[str]:
    return [p["message"] for p in server.notifications("window/showMessage") if p["type"] == 1]


def inline(server: RawServer, invoked: bool = True, token: str | None = None, timeout: float = 60) -> dict:
    params = {"textDocument": {"uri": URI}, "position": AT, "context": {"triggerKind": 1 if invoked else 2}}
    if token:
        params["workDoneToken"] = token
    return server.call("textDocument/inlineCompletion", params, timeout)


def configure(server: RawServer, model: str) -> dict:
    """Point the server at `model`; the status that ends the reload."""
    n = len(server.notifications("dgls/status"))
    server.notify("workspace/didChangeConfiguration", {"settings": {"dgls": {"model": model}}})
    return wait_until(
        lambda: next(
            (s for s in server.notifications("dgls/status")[n:] if s.get("state") in ("ready", "error")), None
        ),
        120,
        f"loading {model}",
    )


def test_load_failures_are_reported_once_and_a_good_model_recovers(broken, tiny_checkpoint):
    with RawServer() as server:
        status = server.initialize({"dgls": {"model": broken["missing"], "steps": 2, "maxCanvas": 16}})
        server.open(URI, TEXT)
        for kind in ("missing", "truncated", "wrong-arch"):
            if kind != "missing":
                status = configure(server, broken[kind])
            assert status["state"] == "error" and broken[kind].split("/")[-1] in status["error"], status
            wait_until(lambda k=kind: [m for m in errors_shown(server) if broken[k] in m], 30, f"{kind} reported")
            for _ in range(3):  # served, empty, and no further popups
                assert inline(server)["result"]["items"] == []
            assert len([m for m in errors_shown(server) if broken[kind] in m]) == 1, errors_shown(server)
        shown = " ".join(errors_shown(server))
        assert "truncated" in shown and "not a DiffusionGemma" in shown
        assert configure(server, str(tiny_checkpoint))["state"] == "ready"
        assert inline(server)["result"]["items"], "the good model should answer an Invoked request"
        assert server.shutdown() == 0


def test_out_of_memory_is_reported_and_the_server_keeps_answering(tiny_checkpoint):
    patched = [
        sys.executable,
        "-c",
        "import sys, dgls.model.loading as L; L.available_memory = lambda device: 4096; "
        "from dgls.cli import main; sys.exit(main(['--stdio']))",
    ]
    with RawServer(command=patched) as server:
        status = server.initialize({"dgls": {"model": str(tiny_checkpoint)}})
        assert status["state"] == "error" and "GiB free" in status["error"], status
        server.open(URI, TEXT)
        assert inline(server)["result"]["items"] == []
        wait_until(lambda: errors_shown(server), 30, "the showMessage")
        assert len(errors_shown(server)) == 1 and "needs" in errors_shown(server)[0]
        assert server.shutdown() == 0


def test_nan_weights_fail_each_request_reported_once(broken, tiny_checkpoint):
    with RawServer() as server:
        assert server.initialize({"dgls": {"model": broken["nan"], "steps": 2, "maxCanvas": 16}})["state"] == "ready"
        server.open(URI, TEXT)
        for _ in range(3):
            assert inline(server)["result"]["items"] == []
        failed = [s for s in server.notifications("dgls/status") if s.get("event") == "infillFailed"]
        assert len(failed) == 3 and "NaN" in failed[0]["detail"]
        assert len(errors_shown(server)) == 1 and "NaN" in errors_shown(server)[0]
        assert configure(server, str(tiny_checkpoint))["state"] == "ready"
        assert inline(server)["result"]["items"]
        assert server.shutdown() == 0


def test_stdin_closed_while_idle_exits_cleanly(tiny_checkpoint):
    with RawServer() as server:
        server.initialize({"dgls": {"model": str(tiny_checkpoint)}})
        server.close_stdin()
        assert server.wait_exit(30) == 1  # no shutdown request came: LSP says exit code 1
        assert b"Traceback" not in server.stderr, server.stderr.decode(errors="replace")[-2000:]


def test_client_dies_mid_request_the_worker_stops_and_the_server_exits(tiny_checkpoint):
    with RawServer() as server:
        server.initialize({"dgls": {"model": str(tiny_checkpoint), "steps": 100_000, "maxCanvas": 16}})
        server.open(URI, TEXT)
        params = {
            "textDocument": {"uri": URI},
            "position": AT,
            "context": {"triggerKind": 1},
            "workDoneToken": "long-1",
        }
        server.request("textDocument/inlineCompletion", params)
        wait_until(
            lambda: [p for p in server.notifications("$/progress") if p["value"].get("kind") == "report"],
            60,
            "the model to run a step",
        )
        t0 = time.monotonic()
        server.close_stdin()  # the editor crashed: no shutdown, no exit, no cancel
        assert server.wait_exit(60) == 1
        assert time.monotonic() - t0 < 30  # 100 000 steps would take hours: the worker was stopped


def test_a_client_that_stops_reading_stalls_its_session_and_loses_nothing(tiny_checkpoint):
    """stdio has one writer: while the client reads nothing, replies wait in the pipe and then in the server,
    which blocks on the full pipe. When the client reads again every reply arrives, in order."""
    with RawServer() as server:
        server.initialize({"dgls": {"model": str(tiny_checkpoint)}})
        server.open(URI, TEXT * 200)  # a 7 kB document: its hash replies are small, showConfig ones ~1 kB
        server.reading.clear()
        ids = [server.request("workspace/executeCommand", {"command": "dgls.showConfig"}) for _ in range(300)]
        last = server.request("dgls/documentHash", {"uri": URI})
        server.reading.set()
        wait_until(lambda: server.reply(last), 120, "the replies after the client reads again")
        got = [m["id"] for m in server.messages if m.get("id") in set(ids) | {last} and "method" not in m]
        assert got == [*ids, last]
        assert server.shutdown() == 0


def test_a_client_that_stops_reading_and_dies_does_not_leave_the_server_behind(tiny_checkpoint):
    with RawServer() as server:
        server.initialize({"dgls": {"model": str(tiny_checkpoint)}})
        server.reading.clear()
        for _ in range(300):
            server.request("workspace/executeCommand", {"command": "dgls.showConfig"})
        server.proc.stdout.close()  # the client process is gone: both pipe ends close
        server.close_stdin()
        assert server.wait_exit(60) in (0, 1)
