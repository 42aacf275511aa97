"""Code actions and the rewrite command: "Fill holes", "Regenerate selection" and ``dgls.rewrite``.

``textDocument/codeAction`` is cheap (which actions apply at a range); the model runs when one is resolved
(``codeAction/resolve``), or, for clients that cannot resolve edits, when its command ``dgls.applyCodeAction``
runs. Each action regenerates spans through the completion policy (:meth:`dgls.policy.InfillPolicy.edit_spans`)
and answers with a versioned edit; a command applies it with ``workspace/applyEdit`` only if the document did
not change while the model ran.
"""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams

from dgls.documents import Doc
from dgls.engine import Engine
from dgls.policy import Refused
from dgls.protocol import RequestFailed, command_args
from dgls.server import (
    ACTION_FILL_HOLES,
    ACTION_REGENERATE,
    CMD_APPLY_ACTION,
    CMD_REWRITE,
    DglsServer,
    server,
    show_message,
)
from dgls.text import Edit

log = logging.getLogger("dgls.code_actions")

# --- code actions -------------------------------------------------------------------------------------


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite], resolve_provider=True),
)
def code_actions(ls: DglsServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """Cheap: which actions apply here. The model runs only when one is resolved."""
    doc = ls.documents.get(params.text_document.uri)
    if doc is None or "\x00" in doc.text:
        return []
    start, end = ls.documents.offset(doc, params.range.start), ls.documents.offset(doc, params.range.end)
    if start is None or end is None or start > end:
        return []
    data = {"uri": doc.uri, "version": doc.version, "range": [start, end]}
    actions = []
    selected = start < end
    holes = ls.policy.holes(doc.text, start, end)
    if holes:
        where = "selection" if selected else "file"
        actions.append(
            types.CodeAction(
                title=f"dgls: Fill {len(holes)} hole(s) in the {where}",
                kind=types.CodeActionKind.RefactorRewrite,
                data={**data, "action": ACTION_FILL_HOLES},
            )
        )
    if selected:
        actions.append(
            types.CodeAction(
                title="dgls: Regenerate selection",
                kind=types.CodeActionKind.RefactorRewrite,
                data={**data, "action": ACTION_REGENERATE},
            )
        )
    if not _client_resolves_edits(ls):  # the client would never ask for the edit: run it as a command instead
        for action in actions:
            action.command = types.Command(
                title=action.title, command=CMD_APPLY_ACTION, arguments=[{**(action.data or {}), "title": action.title}]
            )
    return actions


def _client_resolves_edits(ls: DglsServer) -> bool:
    """Whether the client resolves a code action's ``edit`` lazily (codeAction/resolve)."""
    cap = ls.client_capabilities.text_document
    support = cap.code_action.resolve_support if cap and cap.code_action else None
    return bool(support and "edit" in support.properties)


@server.feature(types.CODE_ACTION_RESOLVE)
async def resolve_code_action(ls: DglsServer, action: types.CodeAction) -> types.CodeAction:
    """Run the model for a code action and attach its versioned edit."""
    doc, edits = await _action_edits(ls, types.CODE_ACTION_RESOLVE, action.data, action.title)
    action.edit = ls.documents.versioned_edit(doc, edits)
    return action


@server.command(CMD_APPLY_ACTION)
async def apply_code_action(ls: DglsServer, *args: Any) -> dict[str, Any]:
    """A code action run as a command: compute its edit, then workspace/applyEdit if the document is unchanged."""
    (data,) = command_args(ls, CMD_APPLY_ACTION, args, [("action", dict)])
    doc, edits = await _action_edits(ls, CMD_APPLY_ACTION, data, str(data.get("title") or "dgls"))
    return await _apply_if_current(ls, doc, edits, str(data.get("title") or "dgls"))


async def _action_edits(ls: DglsServer, method: str, data: Any, title: str) -> tuple[Doc, list[Edit]]:
    """The document and the edits of the code action described by `data` (what textDocument/codeAction gave)."""
    data = data if isinstance(data, dict) else {}
    uri, rng, kind = data.get("uri"), data.get("range"), data.get("action")
    if not isinstance(uri, str) or kind not in (ACTION_FILL_HOLES, ACTION_REGENERATE) or not _is_range(rng):
        raise JsonRpcInvalidParams(
            f"{method}: data must be what textDocument/codeAction gave (uri, range, action), got {data!r}"
        )
    doc = ls.documents.get(uri)
    if doc is None:
        raise RequestFailed(f"{uri} is not open")
    if doc.version != data.get("version"):
        raise RequestFailed(
            f"{uri} changed since the action was offered (version {data.get('version')} -> "
            f"{doc.version}); ask for code actions again"
        )
    engine = ls.ready_engine()
    if engine is None:
        raise RequestFailed(f"the model is {ls.engine.state if ls.engine else 'not started'}; try again when ready")
    start, end = rng
    spans = ls.policy.holes(doc.text, start, end) if kind == ACTION_FILL_HOLES else [(start, end)]
    share = 1.0 if kind == ACTION_FILL_HOLES else ls.settings.regenerate_share
    edits = await _edit_spans(ls, engine, doc, spans, title=title, joint=kind == ACTION_FILL_HOLES, share=share)
    if not edits:
        show_message(ls, types.MessageType.Info, f"{title}: the model proposed nothing usable; nothing changed")
    return doc, edits


def _is_range(rng: Any) -> bool:
    return isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) for v in rng) and 0 <= rng[0] <= rng[1]


async def _edit_spans(
    ls: DglsServer,
    engine: Engine,
    doc: Doc,
    spans: list[tuple[int, int]],
    *,
    title: str,
    instruction: str | None = None,
    joint: bool = False,
    share: float = 1.0,
) -> list[Edit]:
    """Regenerate each span of `doc` with cancellable progress; RequestFailed when the policy refuses.

    `joint`: the spans are holes filled together, one canvas per group that fits; `share` < 1: a selection is
    regenerated in place (only that share of its tokens renoised).
    """
    try:
        return await ls.policy.edit_spans(
            engine,
            doc.text,
            doc.language,
            spans,
            title=title,
            instruction=instruction,
            progress=ls.progress_bars.work(),
            joint=joint,
            renoise_share=share,
        )
    except Refused as exc:
        raise RequestFailed(str(exc)) from None


async def _apply_if_current(ls: DglsServer, doc: Doc, edits: list[Edit], label: str) -> dict[str, Any]:
    """workspace/applyEdit the edits computed on `doc`, unless the document changed meanwhile (then say so)."""
    now = ls.documents.get(doc.uri)
    if now is None or now.version != doc.version:
        reason = (
            f"{doc.uri} changed while the edit was computed (version {doc.version} -> "
            f"{now.version if now else 'closed'}); {label} not applied"
        )
        show_message(ls, types.MessageType.Warning, f"dgls: {reason}")
        return {"applied": False, "reason": reason}
    if not edits:
        return {"applied": False, "reason": "no edit"}
    try:
        result = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=ls.documents.versioned_edit(doc, edits), label=label)
        )
    except JsonRpcException as exc:  # the client said no with an error (eglot: "User cancelled server edit")
        log.info("%s: the client refused the edit: %s", label, exc)
        return {"applied": False, "reason": f"the editor refused the edit: {exc}"}
    return {"applied": result.applied, "reason": result.failure_reason}


@server.command(CMD_REWRITE)
async def rewrite(ls: DglsServer, *args: Any) -> dict[str, Any]:
    """Rewrite a range following an instruction: arguments ``[uri, range, instruction]``.

    The edit goes out through workspace/applyEdit, versioned, and only if the document did not change while the
    model ran; otherwise the user is told and nothing is applied.
    """
    uri, range, instruction = command_args(
        ls, CMD_REWRITE, args, [("uri", str), ("range", types.Range), ("instruction", str)]
    )
    doc = ls.documents.get(uri)
    if doc is None:
        raise RequestFailed(f"{CMD_REWRITE}: {uri} is not open")
    start, end = ls.documents.offset(doc, range.start), ls.documents.offset(doc, range.end)
    if start is None or end is None or start >= end:
        raise RequestFailed(
            f"{CMD_REWRITE}: expected a non-empty range inside the document, got "
            f"{range.start.line}:{range.start.character}-{range.end.line}:{range.end.character}"
        )
    engine = ls.ready_engine()
    if engine is None:
        raise RequestFailed(f"{CMD_REWRITE}: the model is {ls.engine.state if ls.engine else 'not started'}")
    edits = await _edit_spans(ls, engine, doc, [(start, end)], title="dgls: Rewrite", instruction=instruction)
    if not edits:
        show_message(ls, types.MessageType.Info, "dgls: the model produced no rewrite for the selection")
    return await _apply_if_current(ls, doc, edits, "dgls: Rewrite")
