"""The completion policy on plain text and offsets, with no LSP and no model: newest wins, ghost text, filters."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from dgls.ghost import Ghost
from dgls.policy import InfillPolicy
from dgls.settings import Settings
from dgls.text import Edit

TEXT = "def f(a):\n    return \n"
AT = TEXT.index("return ") + len("return ")


class Host:
    """A host with no model: every call is recorded."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.asked_engine = 0
        self.statuses: list[dict] = []

    def ready_engine(self):
        self.asked_engine += 1
        return None

    def current_text(self, uri: str) -> str | None:
        return None

    def open_texts(self) -> list[tuple[str, str]]:
        return []

    def send_status(self, **event) -> None:
        self.statuses.append(event)

    def report_fault(self, message: str) -> None:
        raise AssertionError(message)


def test_the_policy_imports_no_lsp_types():
    code = (
        "import sys, dgls.policy; print(sorted(m for m in sys.modules if m.split('.')[0] in ('lsprotocol', 'pygls')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_newest_wins_per_document():
    policy = InfillPolicy(Host())
    first = policy.claim("u")
    second = policy.claim("u")
    other = policy.claim("v")
    assert first.is_set() and not second.is_set()
    policy.release("u", first)  # a superseded request does not release its successor
    assert policy.inflight == {"u": second, "v": other}
    policy.forget("u")
    assert second.is_set() and policy.inflight == {"v": other}
    policy.cancel_all()
    assert other.is_set()


def test_typing_the_ghost_text_answers_without_the_model():
    host = Host()
    policy = InfillPolicy(host)
    policy.ghosts.remember("u", Ghost(TEXT, Edit(AT, AT, "a + 1")))
    typed = TEXT[:AT] + "a" + TEXT[AT:]
    found = asyncio.run(policy.complete("u", typed, "python", AT + 1, automatic=True, n_candidates=1))
    assert found is not None and found.request is None
    assert [(e.start, e.end, e.new_text) for e in found.edits] == [(AT + 1, AT + 1, " + 1")]
    assert policy.stats["typedThrough"] == 1 and host.asked_engine == 0


def test_no_ready_model_no_answer_and_nothing_in_flight():
    host = Host()
    policy = InfillPolicy(host)
    policy.ghosts.remember("u", Ghost(TEXT, Edit(AT, AT, "a + 1")))
    found = asyncio.run(policy.complete("u", TEXT, "python", AT, automatic=False, n_candidates=3))
    assert found is None  # Invoked: the ghost is not used, and there is no model
    assert host.asked_engine == 1 and policy.inflight == {}


def test_what_is_served():
    policy = InfillPolicy(Host())
    assert policy.serves(TEXT, "python")
    assert not policy.serves("a\x00b", "python")
    text = "def f():\n    ...\n\ndef g():\n    ...\n"
    assert len(policy.holes(text, 0, 0)) == 2  # an empty range: the whole file
    assert len(policy.holes(text, 0, text.index("def g"))) == 1


def test_the_prefix_window_start_is_kept_per_document_while_its_text_is_the_same():
    """Each completion passes the last window start of its document to the engine, while the text there is
    unchanged; a closed document, or an edit at that start, forgets it."""
    from concurrent.futures import Future

    from dgls.context import ContextBudget, build_request
    from dgls.engine import EngineError

    class Engine:
        def __init__(self) -> None:
            self.kept: list[int | None] = []

        def build_request(self, text, offset, *, language=None, keep_prefix_start=None):
            self.kept.append(keep_prefix_start)
            budget = ContextBudget(40, 10)
            return build_request(
                text, offset, language=language, budget=budget, count_tokens=len, keep_prefix_start=keep_prefix_start
            )

        def submit(self, *args, **kwargs):
            fut: Future = Future()
            fut.set_exception(EngineError("no model in this test"))
            return fut

    engine = Engine()
    faults: list[str] = []

    class ModelHost(Host):
        def ready_engine(self):
            return engine

        def report_fault(self, message: str) -> None:
            faults.append(message)

    policy = InfillPolicy(ModelHost())
    text = "".join(f"v{i} = {i}\n" for i in range(30))

    def ask(uri: str, doc: str) -> None:
        asyncio.run(policy.complete(uri, doc, "python", len(doc), automatic=False, n_candidates=1))

    ask("u", text)
    first = policy.windows["u"][0]
    ask("u", text + "w = 1\n")  # typed a line: the start it had is passed on
    ask("v", text)  # another document has its own
    edited = text[:first] + "#" + text[first:]
    ask("u", edited)  # the text at the start changed: not passed
    policy.forget("u")
    ask("u", text)
    assert engine.kept == [None, first, None, None, None]
    assert len(faults) == 5  # every request reached the (failing) engine
