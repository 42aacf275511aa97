"""Completions at the cursor: inline completion (ghost text) and the ``textDocument/completion`` fallback.

Each handler finds the open document and the cursor's offset, asks the completion policy
(:meth:`dgls.policy.InfillPolicy.complete`: ghost cache, newest wins, debounce, trigger filters) and turns the
edits it gets into LSP items in the client's position encoding. Languages the model was not trained on get
nothing, with one notice per language and session.
"""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol import types

from dgls.documents import Doc
from dgls.postprocess import from_word_start
from dgls.server import CMD_ACCEPTED, DglsServer, server, show_message
from dgls.text import Edit

log = logging.getLogger("dgls.server")


def _cursor(ls: DglsServer, uri: str, pos: types.Position) -> tuple[Doc, int] | None:
    """The open document and the offset of `pos` in it, where completions are served; None (logged) if not."""
    doc = ls.documents.get(uri)
    if doc is None:
        log.info("no completion: %s is not open", uri)
        return None
    trained = ls.engine.languages if ls.engine is not None else None
    if not ls.policy.serves(doc.text, doc.language, trained):
        notice = ls.policy.untrained_notice(doc.language, trained) if "\x00" not in doc.text else None
        if notice is not None:
            show_message(ls, types.MessageType.Info, notice)
            ls.send_status(event="languageNotTrained", language=doc.language, detail=notice)
        return None
    offset = ls.documents.offset(doc, pos)
    if offset is None:
        log.info("no completion: line %d is outside %s (%d lines)", pos.line, uri, len(doc.lines))
        return None
    return doc, offset


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: DglsServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    """Ghost text at the cursor: one candidate on Automatic triggers, several on Invoked ones."""
    automatic = params.context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
    cursor = _cursor(ls, params.text_document.uri, params.position)
    if cursor is None:
        return types.InlineCompletionList(items=[])
    doc, offset = cursor
    found = await ls.policy.complete(
        doc.uri,
        doc.text,
        doc.language,
        offset,
        automatic=automatic,
        n_candidates=1 if automatic else ls.settings.candidates,
        progress=ls.progress_bars.work(params.work_done_token, create=False),
    )
    if found is None or not found.edits:
        return types.InlineCompletionList(items=[])
    ids = ls.policy.served(len(found.edits))
    return types.InlineCompletionList(
        items=[
            types.InlineCompletionItem(
                insert_text=e.new_text,
                range=ls.documents.range(doc, e.start, e.end),
                command=types.Command(
                    title="dgls: accepted", command=CMD_ACCEPTED, arguments=[item_id, _confidence(ls, e)]
                ),
            )
            for item_id, e in zip(ids, found.edits, strict=True)
        ]
    )


def _confidence(ls: DglsServer, edit: Edit) -> dict[str, Any]:
    """How sure the model is of an item: the second argument of its ``dgls.accepted`` command.

    ``{"confidence": mean over its tokens (0..1), "tokens": [[start, end, confidence], ...], "unsure":
    [[start, end], ...]}``, offsets into the item's insertText in the negotiated position encoding's units (as
    LSP characters); ``unsure`` are the runs of tokens at or below the ``lowConfidence`` setting. In the
    command's arguments because an InlineCompletionItem has no ``data`` field and clients drop fields LSP does
    not define, while command arguments are passed through as they are (VS Code hands them to its item's command).
    """
    spans = ls.documents.spans(edit.new_text, [(start, end) for start, end, _ in edit.tokens])
    tokens = [[start, end, round(c, 4)] for (start, end), (_, _, c) in zip(spans, edit.tokens, strict=True)]
    return {
        "confidence": round(edit.confidence, 4),
        "tokens": tokens,
        "unsure": ls.documents.spans(edit.new_text, edit.unsure(ls.settings.low_confidence)),
    }


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
async def completion(ls: DglsServer, params: types.CompletionParams) -> types.CompletionList:
    """Fallback for clients without inline completion: the middle as a completion item with a textEdit.

    After a partial word (``return a|``) the item starts at the word's start, the typed part in its text and
    filterText, since clients filter items by the word before the cursor.
    """
    kind = params.context.trigger_kind if params.context else types.CompletionTriggerKind.Invoked
    cursor = _cursor(ls, params.text_document.uri, params.position)
    if cursor is None:
        return types.CompletionList(is_incomplete=True, items=[])
    doc, offset = cursor
    found = await ls.policy.complete(
        doc.uri, doc.text, doc.language, offset, automatic=kind != types.CompletionTriggerKind.Invoked, n_candidates=1
    )
    items = []
    for rank, e in enumerate(found.edits if found is not None else []):
        e = from_word_start(doc.text, e)
        label = e.new_text.strip().splitlines()[0]
        items.append(
            types.CompletionItem(
                label=label if len(label) <= 60 else label[:57] + "...",
                kind=types.CompletionItemKind.Snippet,
                detail="dgls",
                sort_text=f"{rank:04d}",
                filter_text=e.new_text,
                documentation=e.new_text,
                insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=ls.documents.range(doc, e.start, e.end), new_text=e.new_text),
            )
        )
    return types.CompletionList(is_incomplete=True, items=items)
