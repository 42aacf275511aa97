"""Work-done progress: the model loading, and each infill or edit with its denoising steps.

The model worker reports steps from its own thread; reports are handed to the event loop and dropped once
their progress has ended or the client has said ``shutdown``. An edit's progress is cancellable: the client's
cancel sets the request's cancel event, which stops the worker at its next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable

from lsprotocol import types

from dgls.transport import HardenedServer

log = logging.getLogger(__name__)


class ProgressBars:
    """The server's progress bars: one for the model loading, one per request (:meth:`work`)."""

    def __init__(self, server: HardenedServer) -> None:
        self._server = server
        self._load_token: types.ProgressToken | None = None

    def supported(self) -> bool:
        """Whether the client accepts server-initiated work-done progress."""
        window = self._server.client_capabilities.window
        return bool(window and window.work_done_progress)

    async def begin_load(self, message: str) -> bool:
        """Show the model loading; False when the client refused the progress (then nothing is shown)."""
        token = f"dgls-load-{uuid.uuid4()}"
        try:
            await self._server.work_done_progress.create_async(token)
        except Exception as exc:  # the client refused: no progress bar, the status notification still goes
            log.info("no load progress: %s", exc)
            return False
        self._server.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title="dgls", message=message, cancellable=False)
        )
        self._load_token = token
        return True

    def end_load(self, message: str) -> None:
        """Close the model-loading progress, if one is open."""
        if self._load_token is not None:
            self._server.work_done_progress.end(self._load_token, types.WorkDoneProgressEnd(message=message))
            self._load_token = None

    def work(self, token: types.ProgressToken | None = None, *, create: bool = True) -> WorkDone:
        """The progress of one request: on the client's `token`, else on one created here (when `create`)."""
        return WorkDone(self, token, create=create)


class WorkDone:
    """One request's cancellable progress (a :class:`dgls.policy.Progress`); silent when there is no token."""

    def __init__(self, progress: ProgressBars, token: types.ProgressToken | None, *, create: bool) -> None:
        self._progress = progress
        self._server = progress._server
        self._given = token
        self._create = create
        self._token: types.ProgressToken | None = None  # once begun

    async def begin(self, title: str, cancel: threading.Event) -> None:
        """Start the progress (creating a token if none was given and the client allows); cancelling sets `cancel`."""
        token = self._given
        if token is None:
            if not self._create or not self._progress.supported():
                return
            token = f"dgls-{uuid.uuid4()}"
            try:
                await self._server.work_done_progress.create_async(token)
            except Exception as exc:
                log.info("no progress for %s: %s", title, exc)
                return
        progress = self._server.work_done_progress
        progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=True, percentage=0))
        progress.tokens[token].add_done_callback(lambda f: cancel.set() if f.cancelled() else None)
        self._token = token

    def on_step(self, part: int, parts: int) -> Callable[[int, int], None] | None:
        """An on_step callback for the model worker, reporting on the event loop (None: no progress)."""
        token = self._token
        if token is None:
            return None
        loop = asyncio.get_running_loop()

        def on_step(step: int, total: int) -> None:
            pct = min(99, int(100 * (part + step / max(total, 1)) / parts))
            report = types.WorkDoneProgressReport(message=f"{part + 1}/{parts}: step {step}/{total}", percentage=pct)
            loop.call_soon_threadsafe(self._report_if_open, token, report)

        return on_step

    def _report_if_open(self, token: types.ProgressToken, report: types.WorkDoneProgressReport) -> None:
        if token in self._server.work_done_progress.tokens and not self._server.shut_down:  # a step after the end
            self._server.work_done_progress.report(token, report)

    def end(self, message: str) -> None:
        """End the progress, if it began."""
        if self._token is not None and not self._server.shut_down:
            self._server.work_done_progress.end(self._token, types.WorkDoneProgressEnd(message=message))
            self._server.work_done_progress.tokens.pop(self._token, None)
