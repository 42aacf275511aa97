"""Short soak (the long one is benchmarks/soak.py): three clients type at once, one over stdio and two over TCP.

pygls serves one client per TCP server (and dgls refuses a second connection, see test_security.py), so each
TCP client has its own server. Checked: every request answered (no hang), the server's text identical to the
client's after every change, no unexpected errors, each fault survived, each bad request answered, memory and
open file handles flat after warm-up, a clean exit.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the soak session lives beside soak.py
from soak_session import SoakConfig, SoakReport, run_sessions  # noqa: E402

CHANGES = 120
RSS_GROWTH_KIB = 48 * 1024  # after warm-up; the caches are bounded (64 results, one ghost per document)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reports(tiny_checkpoint) -> list[SoakReport]:
    cfg = SoakConfig(model=str(tiny_checkpoint), changes=CHANGES, fault_every=40, bad_input_every=15, sample_every=10)
    return asyncio.run(asyncio.wait_for(run_sessions(cfg, (free_port(), free_port())), timeout=240))


def test_three_clients_ran(reports):
    assert [r.label for r in reports] == ["stdio", "tcp0", "tcp1"]


@pytest.mark.parametrize("n", range(3))
def test_every_request_answered_and_text_in_step(reports, n):
    r = reports[n]
    print({k: v for k, v in vars(r).items() if k not in ("samples", "latencies")})  # shown when an assert fails
    assert r.hangs == 0
    assert r.requests >= CHANGES and r.answered == r.requests
    assert r.mismatches == []
    assert r.hash_checks >= CHANGES
    assert r.other_errors == []  # replies are results or -32800, nothing else
    assert r.cancels_sent > 0 and r.cancelled_replies <= r.cancels_sent
    assert r.bad_inputs == CHANGES // 15 and r.bad_input_replies == r.bad_inputs
    assert r.faults == CHANGES // 40 and r.faults_survived == r.faults
    assert r.errors_shown == []
    assert r.exit_code == 0


@pytest.mark.parametrize("n", range(3))
def test_memory_and_file_handles_flat_after_warm_up(reports, n):
    r = reports[n]
    warm = next(s for s in r.samples if s[0] >= CHANGES // 3)
    late = [s for s in r.samples if s[0] >= warm[0]]
    rss_growth = max(s[1] for s in late) - warm[1]
    assert rss_growth < RSS_GROWTH_KIB, f"RSS grew {rss_growth} KiB after warm-up: {r.samples}"
    assert max(s[2] for s in late) <= warm[2] + 1, f"open fds grew after warm-up: {r.samples}"
