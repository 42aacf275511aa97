"""Code actions' edge cases that need no model: an edit the client refuses with an error."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from pygls.exceptions import JsonRpcInternalError

from dgls.code_actions import _apply_if_current
from dgls.text import Edit


class RefusingServer:
    """Just what _apply_if_current touches; workspace/applyEdit answers with an error, as eglot does on 'no'."""

    def __init__(self, doc):
        self.doc = doc
        self.documents = SimpleNamespace(get=lambda uri: doc, versioned_edit=lambda d, edits: {"edits": edits})

    async def workspace_apply_edit_async(self, params):
        raise JsonRpcInternalError("User cancelled server edit")


def test_an_edit_the_client_refuses_with_an_error_is_reported_not_raised():
    doc = SimpleNamespace(uri="file:///a.py", version=3, text="x = \n")
    out = asyncio.run(_apply_if_current(RefusingServer(doc), doc, [Edit(4, 4, "1")], "dgls: Fill 1 hole(s)"))
    assert out["applied"] is False and "User cancelled server edit" in out["reason"]
