"""Typed-through cache: the ghost text last shown per document, answering while the user types it.

When an editor shows ghost text and the user types its first characters, the next inline-completion request
is for text that already exists: the rest of that ghost text. :class:`GhostCache` remembers, per document, the
text the ghost was computed on and the edit it proposed; :meth:`GhostCache.lookup` checks that the new text
is exactly the old one with a prefix of the ghost typed at the edit's start, and returns the remaining edit
with no model call.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Ghost", "GhostCache"]


@dataclass(frozen=True)
class Ghost:
    """An edit shown as ghost text: replace ``text[start:end]`` with ``new_text`` (code-point offsets)."""

    text: str
    start: int
    end: int
    new_text: str


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
        typed = offset - g.start
        if not 0 < typed < len(g.new_text) or len(text) != len(g.text) + typed:
            return None
        if not g.new_text.startswith(text[g.start : offset]):
            return None
        if text[: g.start] != g.text[: g.start] or text[offset:] != g.text[g.start :]:
            return None
        rest = Ghost(text, offset, offset + (g.end - g.start), g.new_text[typed:])
        self._ghosts[uri] = rest
        return rest
