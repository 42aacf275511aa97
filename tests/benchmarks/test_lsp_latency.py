"""benchmarks/lsp_latency.py: the simulated user's verdicts on ghost text, and a short session against the real
server whose report is the server's own counters (``dgls.stats``)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest
from pygls.lsp.client import LanguageClient

from dgls.policy import USAGE_COUNTERS

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lsp_latency", ROOT / "benchmarks" / "lsp_latency.py")
lsp_latency = importlib.util.module_from_spec(spec)
sys.modules["lsp_latency"] = lsp_latency
spec.loader.exec_module(lsp_latency)

TEXT = "def f(xs):\n    ret\n"
CURSOR = TEXT.index("ret") + 3  # the user has typed `ret` and goes on with `urn xs[0]\n`
TO_TYPE = "urn xs[0]\n"


@pytest.mark.parametrize(
    ("start", "end", "new_text", "expected"),
    [
        (CURSOR, CURSOR, "urn xs[0]", ("accepted", 9)),
        (CURSOR, CURSOR, "urn", ("accepted", 3)),
        (CURSOR - 3, CURSOR, "return xs", ("accepted", 6)),  # an item from the word's start: typed part in it
        (CURSOR, CURSOR, "urn xs[1]", ("partiallyAccepted", 7)),  # `urn xs[`: the whole words that match
        (CURSOR, CURSOR, "urns", ("dismissed", 0)),  # not even the first word
        (CURSOR, CURSOR, "x", ("dismissed", 0)),
        (CURSOR - 3, CURSOR, "rex", ("dismissed", 0)),  # does not keep what was typed
        (CURSOR + 1, CURSOR + 1, "urn", ("dismissed", 0)),  # not at the cursor
    ],
)
def test_verdict(start, end, new_text, expected):
    assert lsp_latency.verdict(TEXT, CURSOR, TO_TYPE, start, end, new_text) == expected


def test_verdict_on_an_item_that_replaces_a_closer():
    text = "print()\n"
    cursor = text.index(")")
    assert lsp_latency.verdict(text, cursor, "x, y)\n", cursor, cursor + 1, "x, y)") == ("accepted", 4)
    assert lsp_latency.verdict(text, cursor, "x, y)\n", cursor, cursor + 1, "x, z)") == ("partiallyAccepted", 2)


def test_verdict_takes_spaces_with_the_next_word():
    text = "if x:\n"
    to_type = "    return y\n"
    assert lsp_latency.verdict(text, len(text), to_type, len(text), len(text), "    pass") == ("dismissed", 0)
    assert lsp_latency.verdict(text, len(text), to_type, len(text), len(text), "    return z") == (
        "partiallyAccepted",
        10,
    )


def test_the_report_is_the_servers_counters_not_the_clients_tally():
    stats = {name: 0 for name in USAGE_COUNTERS} | {"itemsServed": 12, "accepted": 3, "partiallyAccepted": 2}
    stats |= {"acceptedChars": 17, "dismissed": 4}
    res = {
        "records": [],
        "server": {"requests": 5, "typedThrough": 0, "resultCache": 0, "cancelled": 0},
        "stats": stats,
        "user": {"shown": 9, "accepted": 0, "partiallyAccepted": 0, "acceptedChars": 0, "dismissed": 0},
        "model": {},
        "keys": 0,
        "covered": 0,
        "model_ms": [],
        "file": "f.py::f",
    }
    s = lsp_latency.summarize(res)
    assert (s["items_served"], s["accepted"], s["partially_accepted"], s["accepted_chars"], s["dismissed"]) == (
        12,
        3,
        2,
        17,
        4,
    )
    assert s["acceptance_rate"] == 0.25
    out = lsp_latency.table(s, res, lsp_latency.parse_args([]))
    assert "| 12 | 9 | 3 | 2 (17) | 4 | 25.0% |" in out
    assert "Acceptance rate = accepted / items served" in out
    none_served = lsp_latency.summarize(res | {"stats": {name: 0 for name in USAGE_COUNTERS}})
    assert none_served["acceptance_rate"] is None
    out = lsp_latency.table(none_served, res, lsp_latency.parse_args([]))
    assert "| 0 | 9 | 0 | 0 (0) | 0 | - (no item served) |" in out


SESSION = '''def total(xs):
    """The sum of xs."""
    result = 0
    for x in xs:
        result = result + x
    return result
'''


def test_a_short_session_reports_what_dgls_stats_returned(tmp_path, monkeypatch):
    """A real typing session; every workspace/executeCommand the script sends is recorded on its way.

    The report's counters must be the ones the one ``dgls.stats`` call returned, and those must count exactly the
    verdicts the simulated user sent: one per ghost text shown.
    """
    calls: list[tuple[str, list, object]] = []
    send = LanguageClient.workspace_execute_command_async

    async def recording(self, params, *args, **kwargs):
        result = await send(self, params, *args, **kwargs)
        calls.append((params.command, params.arguments, result))
        return result

    monkeypatch.setattr(LanguageClient, "workspace_execute_command_async", recording)
    source = tmp_path / "total.py"
    source.write_text(SESSION)
    argv = ["--file", str(source), "--function", "total", "--steps", "4", "--debounce-ms", "0"]
    args = lsp_latency.parse_args([*argv, "--ms-per-key", "250", "--pause-ms", "0"])
    res = asyncio.run(lsp_latency.run(args))
    s = lsp_latency.summarize(res)
    out = lsp_latency.table(s, res, args)

    assert s["invoked_n"] >= 1 and s["invoked_items"] > 0, "Invoked requests after the session, some answered"
    assert s["p50_invoked_ms"] > 0 and s["ready_s"] > 0 and s["first_ms"] > 0
    assert f"at {s['invoked_n']} line ends" in out
    (stats,) = [result for command, _, result in calls if command == "dgls.stats"]
    assert set(USAGE_COUNTERS) <= set(stats), stats
    assert stats["modelCalls"] >= 1 and stats["nfe"] >= stats["modelCalls"], stats
    reported = (s["items_served"], s["accepted"], s["partially_accepted"], s["accepted_chars"], s["dismissed"])
    assert reported == (
        stats["itemsServed"],
        stats["accepted"],
        stats["partiallyAccepted"],
        stats["acceptedChars"],
        stats["dismissed"],
    )
    row = (
        f"| {stats['itemsServed']} | {res['user']['shown']} | {stats['accepted']} | {stats['partiallyAccepted']} "
        f"({stats['acceptedChars']}) | {stats['dismissed']} |"
    )
    assert row in out, out

    sent = Counter(command for command, _, _ in calls)
    assert (sent["dgls.accepted"], sent["dgls.partiallyAccepted"], sent["dgls.dismissed"]) == (
        stats["accepted"],
        stats["partiallyAccepted"],
        stats["dismissed"],
    ), calls
    assert stats["acceptedChars"] == sum(arguments[1] for command, arguments, _ in calls if "partially" in command)
    assert res["user"]["shown"] == stats["accepted"] + stats["partiallyAccepted"] + stats["dismissed"]
    assert stats["itemsServed"] >= res["user"]["shown"] >= 1, "the session showed no ghost text: pick a slower typist"
