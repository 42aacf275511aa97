"""`dgls --tcp`: listens on loopback by default, says so, serves LSP and exits cleanly."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest
from e2e_helpers import capabilities
from lsprotocol import types
from pygls.lsp.client import LanguageClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.asyncio
async def test_tcp_on_loopback(tiny_checkpoint):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dgls.cli", "--tcp", "--port", str(port)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    client = LanguageClient("dgls-tcp-test", "0")
    try:
        banner = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), timeout=60)
        assert f"tcp://127.0.0.1:{port}" in banner and "loopback only" in banner
        for _ in range(200):  # the banner comes just before the socket is bound
            try:
                await client.start_tcp("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        result = await client.initialize_async(types.InitializeParams(
            capabilities=capabilities(), initialization_options={"dgls": {"model": str(tiny_checkpoint), "steps": 2}}))
        assert result.capabilities.inline_completion_provider is not None
        client.initialized(types.InitializedParams())
        config = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
        assert config["settings"]["steps"] == 2
        await client.shutdown_async(None)
        client.exit(None)
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        await client.stop()
