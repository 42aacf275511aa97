"""Typed-through cache: the ghost text last shown per document, answering while the user types it.

When an editor shows ghost text and the user types its first characters, the next inline-completion request
is for text that already exists: the rest of that ghost text. :class:`GhostCache` remembers, per document, the
text the ghost was computed on and the edit it proposed; :meth:`GhostCache.lookup` checks that the new text
is exactly the old one with a prefix of the ghost typed at the edit's start, and returns the remaining edit
with no model call.
"""

from __future__ import annotations

from dataclasses import dataclass

from dgls.text import Edit

__all__ = ["Ghost", "GhostCache"]


@dataclass(frozen=True)
class Ghost:
    """An edit shown as ghost text, with the document text it was computed on."""

    text: str
    edit: Edit


class GhostCache:
    """The last ghost text per document URI."""

    def __init__(self) -> None:
        self._ghosts: dict[str, Ghost] = {}

    def remember(self, uri: str, ghost: Ghost) -> None:
        """Record the ghost text just shown for `uri` (replacing the previous one)."""
        self._ghosts[uri] = ghost

    def forget(self, uri: str) -> None:
        """Drop what is known about `uri` (closed document)."""
        self._ghosts.pop(uri, None)

    def lookup(self, uri: str, text: str, offset: int) -> Ghost | None:
        """The rest of the ghost when `text` is the shown one with its first characters typed, cursor after them.

        Returns a ghost on `text` (its range moved past the typed characters), or None when the user typed
        something else, moved, typed all of it, or edited elsewhere.
        """
        g = self._ghosts.get(uri)
        if g is None:
            return None
        e = g.edit
        typed = offset - e.start
        if not 0 < typed < len(e.new_text) or len(text) != len(g.text) + typed:
            return None
        if not e.new_text.startswith(text[e.start : offset]):
            return None
        if text[: e.start] != g.text[: e.start] or text[offset:] != g.text[e.start :]:
            return None
        rest = Ghost(text, Edit(offset, offset + (e.end - e.start), e.new_text[typed:]))
        self._ghosts[uri] = rest
        return rest
