"""Seeds for the canvas: what followed the same code elsewhere in the open documents and the workspace.

Much of what a programmer types repeats something nearby: the same call with the same arguments, a sibling
method, the next row of a table. :class:`SeedIndex` finds the longest earlier occurrence of the tokens before the
cursor and returns what followed it, up to the end of its line, as a :class:`Seed` the sampler can place into the
free slots instead of noise (the model keeps, edits or replaces it).

Tokens here are not the model's: a regex splits code into identifiers, numbers and single punctuation
characters, and matching ignores whitespace (``f(a,b)`` matches ``f( a, b )``). Each token is coded as two
16-bit characters (32 bits of its hash), so a document's tokens are a ``str`` of 4 bytes a token and a run of
tokens is a substring: CPython's substring search finds the occurrences of the last few tokens, and
``str.endswith`` measures how far back each one matches. A document is coded line by line and an open document
keeps a cache of its lines' codes, so :meth:`SeedIndex.update` after a keystroke re-tokenizes only the lines
that changed. Codes need no shared vocabulary (nothing to grow, lock or rebuild). A false match needs a token
before the cursor to share 32 bits of hash with another token of the index that stands among the same tokens:
with 50,000 distinct tokens, fewer than 1 lookup in 80,000 (16 bits were too few: ``fetch_user`` met
``_fatal_error`` in the stdlib).

Which occurrence wins: the longest match (in tokens, at most :data:`MAX_MATCH_TOKENS`); among those, the most
frequent continuation; among those, the nearest: the same document above the cursor (closest first), then below
it, then the other open documents (most recently updated first), then the workspace files. At most
:data:`MAX_OCCURRENCES` occurrences are scored per lookup, and the continuations of at most :data:`MAX_VOTES` of
the longest are compared, both nearest first, which bounds a lookup for a very common run of tokens.

Measured once with a small script on the 2-core CPU of the development machine (Python 3.11, a training job
running beside it, so the spread is wide): :meth:`~SeedIndex.update` of a 2,000-line (75 KB) Python file takes
6-9 ms the first time and 0.6-0.7 ms a keystroke after that (a line typed into its middle); reading 162 stdlib
files (5 MB, 1.05 M tokens) with :meth:`~SeedIndex.index_workspace` 0.6-0.8 s, and they hold 15 MB (35 MB at the
peak, while reading); :meth:`~SeedIndex.lookup` over them p50 1.8-2.2 ms, p95 4-7 ms for 200 prefixes cut at
random places, 1.6 ms for tokens found nowhere, 3-4 ms for ``return self.`` (930 occurrences). A dict from
token trigrams to positions, measured as the alternative, held 91 MB for the same 5 MB.

Security: :meth:`~SeedIndex.index_workspace` reads regular files inside the given folders only (every path is
resolved, symlinks included, and must stay inside a folder), opens them read-only, writes nothing, and bounds the
number and size of what it reads. Nothing here touches the network.
"""

from __future__ import annotations

import os
import re
import stat
from array import array
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, islice
from pathlib import Path

__all__ = [
    "DEFAULT_SUFFIXES",
    "MAX_BYTES_PER_FILE",
    "MAX_DOCUMENT_CHARS",
    "MAX_ENTRIES_SCANNED",
    "MAX_FILES",
    "MAX_MATCH_TOKENS",
    "MAX_OCCURRENCES",
    "MAX_SEED_CHARS",
    "MAX_TOTAL_BYTES",
    "MAX_VOTES",
    "MIN_MATCH_CHARS",
    "MIN_MATCH_TOKENS",
    "Seed",
    "SeedIndex",
    "WorkspaceStats",
]

MIN_MATCH_TOKENS = 3  # a seed needs at least this many tokens before the cursor to match (a partial word counts)
MIN_MATCH_CHARS = 8  # ... and at least this many non-whitespace characters
MAX_MATCH_TOKENS = 64  # matches are measured up to this length; longer ones tie
MAX_SEED_CHARS = 200  # a seed's text is cut at this length
MAX_OCCURRENCES = 2000  # occurrences of the last tokens scored per lookup, nearest first
MAX_VOTES = 64  # continuations of the longest matches compared per lookup, nearest first
MAX_DOCUMENT_CHARS = 1_000_000  # a larger document given to update() is not indexed

MAX_FILES = 1000  # index_workspace reads at most this many files ...
MAX_BYTES_PER_FILE = 256 * 1024  # ... skips larger ones (generated or minified, mostly) ...
MAX_TOTAL_BYTES = 8 * 1024 * 1024  # ... reads this much in all (the index holds about 3 bytes per byte read) ...
MAX_ENTRIES_SCANNED = 100_000  # ... and looks at this many directory entries at most
DEFAULT_SUFFIXES = (
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".mts", ".cts", ".tsx", ".go", ".rs",
    ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".java", ".kt", ".swift", ".cs", ".rb", ".php",
    ".lua", ".sh", ".bash", ".sql", ".html", ".css",
)  # fmt: skip
_SKIPPED_DIRS = frozenset(
    {"node_modules", "bower_components", "__pycache__", "site-packages", "venv", "env", "build", "dist", "target"}
)  # and every hidden directory (.git, .venv, .tox ...) and every directory holding a pyvenv.cfg

# Identifiers, numbers (``0x1F``, ``1.5``, ``1_000``) and any other non-space character on its own. No token
# spans a line break, so a document is tokenized line by line.
_TOKEN = re.compile(r"[^\W\d]\w*|\d[\w.]*|\S")
_WORD_END = re.compile(r"\w\Z")
_EOL = re.compile(r"[\r\n]")
_NON_SPACE = re.compile(r"\S")
_INLINE_SPACE = re.compile(r"[ \t]*")
_TAIL_CHARS = 4096  # how much of the prefix is tokenized: enough for MAX_MATCH_TOKENS tokens in nearly all code
_MAX_CACHED_TOKENS = 1 << 18
_W = 2  # code units a token


@dataclass(frozen=True, slots=True)
class Seed:
    """A continuation found elsewhere: what followed the same tokens there, up to the end of that line."""

    text: str  # to insert at the cursor; never empty or all whitespace
    match_tokens: int  # tokens before the cursor that matched (a partly typed word counts as one)
    match_chars: int  # their non-whitespace characters
    source: str  # the name of the document it came from
    offset: int  # where `text` starts in that document
    votes: int  # how many of the compared occurrences continue with the same text


@dataclass(frozen=True, slots=True)
class WorkspaceStats:
    """What :meth:`SeedIndex.index_workspace` read."""

    files: int
    bytes: int
    skipped: int  # files with a wanted suffix left out: too large, over the budget, binary, not UTF-8, unreadable


class _Codes(dict[str, str]):
    """Token -> its code, cached (a pure function of the token: clearing the cache is harmless)."""

    def __missing__(self, token: str) -> str:
        if len(self) >= _MAX_CACHED_TOKENS:
            self.clear()
        h = hash(token)  # salted per process, which is all an in-memory index needs
        code = self[token] = chr(h & 0xFFFF) + chr(h >> 16 & 0xFFFF)
        return code

    def of(self, tokens: Iterable[str]) -> str:
        """The codes of `tokens` as one string."""
        return "".join(map(self.__getitem__, tokens))


class _LineCodes(dict[str, str]):
    """Line -> the codes of its tokens, cached: an edit re-tokenizes only the lines it changed."""

    def __init__(self, codes: _Codes) -> None:
        super().__init__()
        self.codes = codes

    def __missing__(self, line: str) -> str:
        code = self[line] = self.codes.of(_TOKEN.findall(line))
        return code


@dataclass(frozen=True, slots=True)
class _Doc:
    """One indexed document: its text, its token codes, and per line the running token and character counts."""

    text: str
    codes: str  # _W characters a token
    unit_ends: array[int]  # unit_ends[i]: code units of lines 0..i
    char_ends: array[int]  # char_ends[i]: characters in lines 0..i
    lines: _LineCodes | None  # the line cache of an open document; None for a workspace file

    @classmethod
    def build(cls, text: str, lines: _LineCodes, keep_cache: bool) -> _Doc:
        # str.splitlines also breaks at \v, \f, \x1c, \u2028 ...: all whitespace, so no token is split, and the
        # pieces add up to the text, which is all the offsets below need
        pieces = text.splitlines(keepends=True)
        codes = list(map(lines.__getitem__, pieces))
        if keep_cache and len(lines) > 2 * len(pieces) + 1024:  # drop the lines of old versions
            fresh = _LineCodes(lines.codes)
            fresh.update(zip(pieces, codes, strict=True))
            lines = fresh
        return cls(
            text,
            "".join(codes),
            array("i", accumulate(map(len, codes))),
            array("i", accumulate(map(len, pieces))),
            lines if keep_cache else None,
        )

    def span(self, token: int) -> tuple[int, int]:
        """Character span of the token at index `token`."""
        i = bisect_right(self.unit_ends, token * _W)
        start = self.char_ends[i - 1] if i else 0
        before = self.unit_ends[i - 1] // _W if i else 0
        match = next(islice(_TOKEN.finditer(self.text, start, self.char_ends[i]), token - before, None))
        return match.span()

    def tokens_before(self, offset: int) -> int:
        """How many tokens start before character `offset`."""
        i = bisect_right(self.char_ends, offset)
        if i >= len(self.char_ends):
            return len(self.codes) // _W
        start = self.char_ends[i - 1] if i else 0
        before = self.unit_ends[i - 1] // _W if i else 0
        return before + len(_TOKEN.findall(self.text, start, offset))

    def matches(self, codes: str, end: int) -> bool:
        """Whether the tokens before token `end` end with those `codes` stand for."""
        return self.codes.endswith(codes, 0, end * _W)

    def find(self, key: str, start: int = 0) -> Iterator[int]:
        """The end (index of the next token) of each occurrence of `key` from token `start` on, in order."""
        at = self.codes.find(key, start * _W)
        while at >= 0:
            if at % _W == 0:  # else it straddles tokens: halves of two codes
                yield (at + len(key)) // _W
            at = self.codes.find(key, at + 1)

    def rfind(self, key: str, stop: int) -> Iterator[int]:
        """The end of each occurrence of `key` that ends at or before token `stop`, the last one first."""
        at = self.codes.rfind(key, 0, max(stop, 0) * _W)  # (a negative end would count from the end)
        while at >= 0:
            if at % _W == 0:
                yield (at + len(key)) // _W
            at = self.codes.rfind(key, 0, at + len(key) - 1)


@dataclass(frozen=True, slots=True)
class _Tail:
    """The end of the prefix, tokenized: what occurrences are matched against."""

    codes: str  # the last whole tokens' codes
    lengths: list[int]  # their lengths, in order (one per token)
    partial: str  # a word being typed at the cursor ("" if the prefix does not end in a word character)
    space: bool  # whitespace after the last token ...
    newline: bool  # ... holding a line break

    @classmethod
    def of(cls, prefix: str, codes: _Codes) -> _Tail:
        window = prefix[-_TAIL_CHARS:]
        tokens = _TOKEN.findall(window)
        if len(prefix) > len(window) and tokens and not window[0].isspace():
            del tokens[0]  # may be the end of a longer token
        partial = tokens.pop() if tokens and _WORD_END.search(window) else ""
        tokens = tokens[-MAX_MATCH_TOKENS:]
        trail = "" if partial else window[len(window.rstrip()) :]
        return cls(codes.of(tokens), list(map(len, tokens)), partial, bool(trail), "\n" in trail or "\r" in trail)

    def shortest_match(self, min_tokens: int, min_chars: int) -> int | None:
        """The fewest whole tokens an occurrence must match to qualify; None if even all of them are too few."""
        p = 1 if self.partial else 0
        chars = len(self.partial)
        for n, length in enumerate(reversed(self.lengths), start=1):
            chars += length
            if n + p >= min_tokens and chars >= min_chars:
                return n
        return None

    def last(self, n: int) -> str:
        """The codes of the last `n` whole tokens."""
        return self.codes[len(self.codes) - n * _W :]


class SeedIndex:
    """Documents by name (a URI or a path), searchable for what followed the tokens before a cursor.

    Open documents come from :meth:`update`; workspace files from :meth:`index_workspace`, read once. An updated
    document replaces a workspace file of the same name, so name workspace files as the editor does (file URIs).
    """

    def __init__(self) -> None:
        self._codes = _Codes()
        self._open: dict[str, _Doc] = {}  # most recently updated last
        self._files: dict[str, _Doc] = {}  # from the workspace folders

    def update(self, name: str, text: str) -> None:
        """Index the text of document `name` (a new one, or a new version): only its changed lines are tokenized.

        A document over :data:`MAX_DOCUMENT_CHARS` characters is dropped from the index instead.
        """
        old = self._open.pop(name, None)
        self._files.pop(name, None)
        if len(text) > MAX_DOCUMENT_CHARS:
            return
        lines = old.lines if old is not None and old.lines is not None else _LineCodes(self._codes)
        self._open[name] = _Doc.build(text, lines, keep_cache=True)

    def forget(self, name: str) -> None:
        """Drop document `name` from the index (open or from the workspace); unknown names are ignored."""
        self._open.pop(name, None)
        self._files.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._open or name in self._files

    def index_workspace(
        self,
        folders: Iterable[Path],
        *,
        max_files: int = MAX_FILES,
        max_bytes_per_file: int = MAX_BYTES_PER_FILE,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        suffixes: Iterable[str] = DEFAULT_SUFFIXES,
    ) -> WorkspaceStats:
        """Read the source files under `folders`, read-only and bounded, replacing those read by an earlier call.

        Files are named by their ``file://`` URI (``Path.as_uri``) and read breadth-first in name order; hidden
        files and directories, ``node_modules``, virtual environments and build directories are skipped, as is a
        path that resolves outside every folder (a symlink out), a file that is not regular, larger than
        `max_bytes_per_file`, over what is left of `max_total_bytes`, not UTF-8 or holding a NUL byte. Open
        documents (:meth:`update`) keep their own text. Takes about 0.15 s a MB: call it off the event loop if
        needed; the new files replace the old ones at once at the end.
        """
        wanted = frozenset(s.lower() for s in suffixes)
        given = [Path(os.path.abspath(f)) for f in folders if os.path.isdir(f)]  # files are named as found ...
        roots = [Path(os.path.realpath(f)) for f in given]  # ... and checked against where they really are
        lines = _LineCodes(self._codes)  # shared while reading: blank lines, "}" and the like are tokenized once
        files: dict[str, _Doc] = {}
        seen: set[Path] = set()
        total = skipped = 0
        for path in _walk(given, wanted):
            if len(files) >= max_files or total >= max_total_bytes:
                break
            real = Path(os.path.realpath(path))
            if real in seen or not any(real.is_relative_to(root) for root in roots):
                continue
            seen.add(real)
            read = _read_text(real, min(max_bytes_per_file, max_total_bytes - total))
            if read is None:
                skipped += 1
                continue
            text, size = read
            total += size
            files[path.as_uri()] = _Doc.build(text, lines, keep_cache=False)
        for name in list(self._open):  # a copy: update() may run meanwhile on another thread
            files.pop(name, None)
        self._files = files
        return WorkspaceStats(len(files), total, skipped)

    def lookup(
        self,
        prefix: str,
        *,
        exclude_at: tuple[str, int] | None = None,
        max_chars: int = MAX_SEED_CHARS,
        min_tokens: int = MIN_MATCH_TOKENS,
        min_chars: int = MIN_MATCH_CHARS,
    ) -> Seed | None:
        """What followed the longest other occurrence of the end of `prefix`; None if nothing qualifies.

        `prefix` is the text before the cursor (its last few thousand characters are enough). `exclude_at` is
        the document and character offset being completed: the occurrence at the cursor is its own match and is
        never used, occurrences straddling the cursor neither, and a continuation from above the cursor is cut
        at it. A word being typed at the cursor (the prefix ends in a word character) must begin the next token
        of an occurrence, and the seed is the rest of it. After whitespace, the seed starts at the next
        non-whitespace character of the occurrence (on the next line if the prefix ends with a line break).
        A match needs `min_tokens` tokens and `min_chars` non-whitespace characters; the seed is cut at
        `max_chars` and is None when the winning continuation is empty.
        """
        tail = _Tail.of(prefix, self._codes)
        shortest = tail.shortest_match(min_tokens, min_chars)
        if shortest is None:
            return None
        best = shortest  # the longest match so far, in whole tokens
        votes: list[tuple[str, str, int]] = []  # (text, source, offset) of the nearest occurrences matching `best`
        occurrences = self._occurrences(tail.last(shortest), bool(tail.partial), exclude_at)
        for name, doc, end, cap, cut in islice(occurrences, MAX_OCCURRENCES):
            longest = min(cap, len(tail.lengths), end)
            if longest < best or not doc.matches(tail.last(best), end):
                continue
            lo, hi = best, longest  # how far back it matches: the largest n with the last n tokens equal
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if doc.matches(tail.last(mid), end):
                    lo = mid
                else:
                    hi = mid - 1
            if lo == best and len(votes) >= MAX_VOTES:
                continue
            found = _continuation(doc, end, tail, min(cut, len(doc.text)), max_chars)
            if found is None:
                continue
            if lo > best:
                best, votes = lo, []
            votes.append((found[1], name, found[0]))
        if not votes:
            return None
        counts = Counter(text for text, _, _ in votes)
        winner = max(counts.values())
        text, source, offset = next(v for v in votes if counts[v[0]] == winner)  # nearest first
        if not text.strip():
            return None
        chars = sum(tail.lengths[len(tail.lengths) - best :]) + len(tail.partial)
        return Seed(text, best + (1 if tail.partial else 0), chars, source, offset, winner)

    def _occurrences(
        self, key: str, partial: bool, exclude_at: tuple[str, int] | None
    ) -> Iterator[tuple[str, _Doc, int, int, int]]:
        """(name, document, end, longest match allowed, cut) for each occurrence of `key`, nearest first.

        `end` is the index of the token after the occurrence (the word being typed, if `partial`); a match may
        reach `longest` tokens back from it; its continuation stops at character `cut`.
        """
        here = None
        if exclude_at is not None:
            here, offset = exclude_at
            doc = self._open.get(here) or self._files.get(here)
            if doc is not None:
                cursor = doc.tokens_before(offset)
                # above the cursor, leaving out the occurrence at it, whose last token (the word being typed,
                # or the token before the cursor) is token cursor - 1; the continuation is cut at the cursor
                for end in doc.rfind(key, cursor - 2 if partial else cursor - 1):
                    yield here, doc, end, MAX_MATCH_TOKENS, offset
                # below the cursor, matched on what is below only
                for end in doc.find(key, cursor):
                    yield here, doc, end, end - cursor, len(doc.text)
        others = [*reversed(self._open.items()), *((n, d) for n, d in self._files.items() if n not in self._open)]
        for name, doc in others:
            if name == here:
                continue
            for end in doc.find(key):
                yield name, doc, end, MAX_MATCH_TOKENS, len(doc.text)


def _continuation(doc: _Doc, end: int, tail: _Tail, cut: int, max_chars: int) -> tuple[int, str] | None:
    """(offset, text) of what follows the occurrence whose next token is `end`; None if the word being typed differs."""
    text = doc.text
    if tail.partial:
        if end * _W >= len(doc.codes):
            return None
        start, stop = doc.span(end)
        if not text.startswith(tail.partial, start, stop):
            return None
        start += len(tail.partial)
    else:
        start = doc.span(end - 1)[1]
        if tail.newline:
            match = _NON_SPACE.search(text, start, cut)
            start = match.start() if match else cut
        elif tail.space:
            start = _INLINE_SPACE.match(text, start).end()  # type: ignore[union-attr]  # always matches
    stop = max(start, min(cut, start + max_chars))
    eol = _EOL.search(text, start, stop)
    return start, text[start : eol.start() if eol else stop]


def _walk(roots: list[Path], suffixes: frozenset[str]) -> Iterator[Path]:
    """Candidate files under `roots`, breadth-first in name order, unresolved (symlinks are checked by the caller)."""
    queue = deque(roots)
    scanned = 0
    while queue and scanned < MAX_ENTRIES_SCANNED:
        folder = queue.popleft()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        scanned += len(entries)
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if name not in _SKIPPED_DIRS and not os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                        queue.append(Path(entry.path))
                elif Path(name).suffix.lower() in suffixes and not name.endswith((".min.js", ".min.css")):
                    yield Path(entry.path)
            except OSError:
                continue


def _read_text(path: Path, limit: int) -> tuple[str, int] | None:
    """(text, bytes) of the regular file `path` if it is UTF-8 of at most `limit` bytes, no NUL; None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > limit or b"\0" in data:
        return None
    try:
        return data.decode("utf-8"), len(data)
    except UnicodeDecodeError:
        return None
