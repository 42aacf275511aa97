"""One typed settings tree for the server, read from LSP ``initializationOptions`` and ``didChangeConfiguration``.

Clients send camelCase JSON, either at the top level or under a ``"dgls"`` key::

    {"dgls": {"model": "dgls-tiny", "steps": 8, "debounceMs": 60,
              "contextBudget": {"prefixTokens": 512}, "languages": {"enable": ["*"], "disable": ["markdown"]}}}

:func:`parse_settings` maps that onto :class:`Settings` in one place: keys it does not know are ignored, a value of
the wrong type or out of range produces one message naming the key, what was expected and what was found, and
that field keeps its previous value. Keys that are absent keep their previous value too, so a client that sends
only the keys it changed (or an empty object) changes only those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from dgls.context import MAX_CANVAS, ContextBudget
from dgls.model import DEFAULT_MODEL, EXPERTS  # torch-free: the model package's __init__ only
from dgls.model.remote import RemoteOptions, check_url  # torch-free too

__all__ = ["BackendSettings", "LanguageSettings", "Settings", "parse_settings"]

SECTION = "dgls"


@dataclass(frozen=True)
class LanguageSettings:
    """Which LSP language ids get completions: the model's own, plus ``enable``, minus ``disable``.

    By default only the languages the model was trained on (its ``dgls.json`` ``languages``) get completions,
    every language when the model does not say; for another one the server tells the user once per session
    how to turn it on. ``enable`` adds languages to those (``["go"]``; ``["*"]`` for every language, what
    dgls did before models declared languages); ``disable`` takes any away, the model's own included.
    """

    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()

    def enabled(self, language: str, trained: tuple[str, ...] | None = ()) -> bool:
        """Whether completions are on for `language` (an LSP language id), given the model's `trained` languages.

        `trained` is None when the model does not declare its languages (then every language is on).
        """
        if language in self.disable:
            return False
        return "*" in self.enable or language in self.enable or trained is None or language in trained

    def untrained(self, language: str, trained: tuple[str, ...] | None) -> bool:
        """Whether `language` is off only because the model was not trained on it (no setting names it)."""
        return language not in self.disable and not self.enabled(language, trained)


@dataclass(frozen=True)
class BackendSettings:
    """Where the model runs: in this process (``local``) or on a vLLM server (``vllm``, see README "Serving a team").

    For ``vllm``: ``url`` is the server's root; ``model`` the served model name (null: the server's default);
    ``tokenizer`` the served checkpoint's folder, embedded name or cached Hugging Face id (null: the ``model``
    setting), loaded here without weights; ``apiKeyEnv`` the environment variable holding the API key (the key
    itself is never a setting); ``timeoutMs`` the limit for one request.
    """

    kind: str = "local"
    url: str | None = None
    model: str | None = None
    tokenizer: str | None = None
    api_key_env: str | None = None
    timeout_ms: int = 10000


@dataclass(frozen=True)
class Settings:
    """Everything a user can set, fully defaulted."""

    model: str = DEFAULT_MODEL  # embedded model name, checkpoint folder or cached Hugging Face id
    device: str | None = None  # None: auto (CUDA when available)
    dtype: str | None = None  # None: auto (bfloat16 on CUDA, float32 on CPU)
    experts: str = "auto"  # MoE models: "auto" (the model's dtype) or "fp8" (FP8 experts, GPU 8.9+)
    max_canvas: int = MAX_CANVAS  # largest canvas in tokens
    steps: int | None = None  # max denoising steps per block; None: the checkpoint's default
    # Automatic triggers (ghost text while typing): step cap, largest canvas and suffix tokens the model reads;
    # None: the model's tuned defaults
    automatic_steps: int | None = None
    automatic_canvas: int | None = None
    automatic_suffix: int | None = None
    threads: int | None = None  # the model's CPU threads; None: OMP_NUM_THREADS, else the cores (at most 4)
    entropy_bound: float | None = None  # acceptance rule bound; None: the checkpoint's default
    debounce_ms: int = 75  # wait this long after an Automatic trigger before running the model
    context_budget: ContextBudget = ContextBudget()  # tokens of prefix and suffix around the middle
    candidates: int = 3  # candidates for an Invoked trigger (one batched pass)
    languages: LanguageSettings = LanguageSettings()
    hole_markers: tuple[str, ...] = ("...",)  # a line holding only one of these is a hole for "Fill holes"
    completion_in_strings: bool = False  # also complete inside strings and comments on Automatic triggers
    # a token of a suggestion whose confidence (the model's probability of it, 0..1) is at most this is "unsure":
    # editors mark it (Neovim: DglsGhostUnsure); 0 marks (almost) nothing, 1 every token
    low_confidence: float = 0.5
    # "Regenerate selection" renoises this share of the selection's tokens (those the model believes least) and
    # keeps the rest as it is; 1 regenerates all of it from noise
    regenerate_share: float = 0.3
    syntax_guided: bool = True  # renoise tokens that break the parse while denoising (languages with a grammar)
    # start the canvas from a continuation found in the open documents and the workspace folders (read-only,
    # bounded) instead of noise; the model keeps what it believes
    workspace_seeds: bool = True
    backend: BackendSettings = BackendSettings()

    def engine_fields(self) -> tuple:
        """Return the values that decide how the model is loaded and run (a change needs a reload)."""
        return (
            self.model,
            self.device,
            self.dtype,
            self.experts,
            self.max_canvas,
            self.steps,
            self.automatic_steps,
            self.automatic_canvas,
            self.automatic_suffix,
            self.threads,
            self.entropy_bound,
            self.context_budget,
            self.backend,
        )

    def remote_options(self) -> RemoteOptions | None:
        """Where the vLLM server is, for the engine; None for the in-process model."""
        b = self.backend
        if b.kind != "vllm" or not b.url:
            return None
        return RemoteOptions(
            url=b.url,
            model=b.model,
            tokenizer=b.tokenizer or self.model,
            api_key_env=b.api_key_env,
            timeout_s=b.timeout_ms / 1e3,
        )

    def sampler_overrides(self) -> dict[str, Any]:
        """Sampler settings that override the checkpoint's defaults (``SamplerConfig`` field names)."""
        out: dict[str, Any] = {}
        if self.steps is not None:
            out["max_steps"] = self.steps
        if self.entropy_bound is not None:
            out["entropy_bound"] = self.entropy_bound
        return out

    def to_json(self) -> dict[str, Any]:
        """Return the settings as the camelCase JSON a client would send (for ``dgls.showConfig``)."""
        return _to_json(self)


# --- parsing ------------------------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, str)):
        kind = {dict: "an object", list: "a list", str: "a string"}[type(value)]
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return f"{kind} {shown}"
    return f"{type(value).__name__} {value!r}"


def _int(minimum: int, maximum: int | None = None, optional: bool = False):
    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ValueError(f"expected an integer{' or null' if optional else ''}")
        value = int(value)
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise ValueError(f"expected an integer >= {minimum}{upper}")
        return value

    return check


def _number(minimum: float, optional: bool = False, maximum: float | None = None):
    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"expected a finite number{' or null' if optional else ''}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise ValueError(f"expected a number >= {minimum}{upper}")
        return float(value)

    return check


def _text(optional: bool = False):
    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a non-empty string{' or null' if optional else ''}")
        value = value.strip()
        return None if optional and value == "auto" else value

    return check


def _choice(*allowed: str):
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(repr(a) for a in allowed)}")
        return value

    return check


def _strings(allow_empty_list: bool = True):
    def check(value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError("expected a list of non-empty strings")
        if not value and not allow_empty_list:
            raise ValueError("expected a non-empty list of strings")
        return tuple(dict.fromkeys(v.strip() for v in value))

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _url(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected an http:// or https:// URL")
    return check_url(value.strip())


def _env_name(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "=" in value or "\x00" in value:
        raise ValueError("expected the name of an environment variable (the key itself does not go in settings)")
    return value.strip()


_NOT_SHOWN = {"api_key_env"}  # a user may paste the key where its variable's name belongs: never echo it

# field name -> validator; nested dataclasses are recursed into. The one table of what each key accepts.
_CHECKS: dict[type, dict[str, Any]] = {
    Settings: {
        "model": _text(),
        "device": _text(optional=True),
        "dtype": _text(optional=True),
        "experts": _choice(*EXPERTS),
        "max_canvas": _int(16, 1024),
        "steps": _int(1, 1024, optional=True),
        "automatic_steps": _int(1, 1024, optional=True),
        "automatic_canvas": _int(1, 1024, optional=True),
        "automatic_suffix": _int(0, 4096, optional=True),
        "threads": _int(1, 256, optional=True),
        "entropy_bound": _number(0.0, optional=True),
        "debounce_ms": _int(0, 5000),
        "candidates": _int(1, 16),
        "hole_markers": _strings(),
        "completion_in_strings": _bool,
        "low_confidence": _number(0.0, maximum=1.0),
        "regenerate_share": _number(0.05, maximum=1.0),
        "syntax_guided": _bool,
        "workspace_seeds": _bool,
    },
    ContextBudget: {"prefix_tokens": _int(16, 1_000_000), "suffix_tokens": _int(0, 1_000_000)},
    LanguageSettings: {"enable": _strings(), "disable": _strings()},
    BackendSettings: {
        "kind": _choice("local", "vllm"),
        "url": _url,
        "model": _text(optional=True),
        "tokenizer": _text(optional=True),
        "api_key_env": _env_name,
        "timeout_ms": _int(100, 600_000),
    },
}


def _parse(cls: type, raw: Mapping[str, Any], base: Any, path: str, problems: list[str]) -> Any:
    changes: dict[str, Any] = {}
    for f in fields(cls):
        key = _camel(f.name)
        if key not in raw:
            continue
        value, where = raw[key], f"{path}{key}"
        current = getattr(base, f.name)
        if f.name in _CHECKS.get(cls, {}):
            try:
                changes[f.name] = _CHECKS[cls][f.name](value)
            except ValueError as exc:
                found = "a value not shown (it may be the key itself)" if f.name in _NOT_SHOWN else _describe(value)
                problems.append(f"{where}: {exc}, got {found}; keeping {_show(current)}")
        elif isinstance(value, Mapping) or _empty_list(value):
            changes[f.name] = _parse(type(current), _object(value), current, f"{where}.", problems)
        else:
            problems.append(f"{where}: expected an object, got {_describe(value)}; keeping the previous value")
    return replace(base, **changes) if changes else base


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return repr(list(value))
    return "null (auto)" if value is None else repr(value)


def _empty_list(value: Any) -> bool:
    """An empty JSON array where an object belongs: what Lua clients send for an empty table (``{}``)."""
    return isinstance(value, list) and not value


def _object(value: Any) -> Mapping[str, Any]:
    return {} if _empty_list(value) else value


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Overlay client settings onto `base` (default: all defaults); return the settings and the problems found.

    `raw` is the JSON a client sent: the settings object itself, or an object with a ``"dgls"`` key holding it,
    or null. An empty array counts as an empty object (a Lua client encodes ``{}`` so). Unknown keys are ignored;
    each invalid value gives one message and keeps the previous value.
    """
    base = base or Settings()
    if raw is None or _empty_list(raw):
        return base, []
    if not isinstance(raw, Mapping):
        return base, [f"settings: expected an object, got {_describe(raw)}; keeping the previous settings"]
    if SECTION in raw:
        inner = raw[SECTION]
        if inner is None or _empty_list(inner):
            return base, []
        if not isinstance(inner, Mapping):
            return base, [f"{SECTION}: expected an object, got {_describe(inner)}; keeping the previous settings"]
        raw = inner
    problems: list[str] = []
    settings = _parse(Settings, raw, base, "", problems)
    if settings.backend.kind == "vllm" and not settings.backend.url:
        problems.append(
            f"backend.url: required when backend.kind is 'vllm', got null; keeping the {base.backend.kind} backend"
        )
        settings = replace(settings, backend=base.backend)
    return settings, problems


def _to_json(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {_camel(f.name): _to_json(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return list(obj)
    return obj
