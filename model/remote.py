"""A vLLM server as the denoiser: the same infill call as the in-process :class:`~dgls.model.infill.Infiller`.

vLLM (0.32) serves DiffusionGemma on ``/v1/completions``; what a diffusion request needs goes in ``vllm_xargs``.
One candidate is one canvas, ``[free slots | pinned suffix]``, sent as one request; several candidates are sent
concurrently and the server batches them. Per request:

- ``prompt``: ``[bos] + prefix ids`` (a token-id prompt gets no BOS from the server). The prefix cache of the
  in-process path becomes vLLM's own prefix caching.
- ``diffusion_seed_canvas``: the free slots hold uniform noise over ``[noise_low, vocab)`` (there is no mask
  token: the noise is the starting canvas, as the model was trained), the suffix follows;
  ``diffusion_pinned``: the suffix's canvas positions, held to the seed after every step;
  ``diffusion_read_only``: one canvas is the whole output (no commit pass, so pins cannot leak into a next one);
  ``diffusion_max_steps``: the step cap (the server clamps it to its own).
- ``return_token_ids``, ``logprobs: 1``, ``skip_special_tokens: false``: the answer carries the argmax canvas and a
  log-probability per position.

The answer is the argmax canvas with the pins *not* applied, so only the slots before the first pinned position
are read; the rest of the middle is cut as in-process (end token, filler, specials: :func:`keep_middle`) and
ranked the same way (:func:`rank_candidates`). Per-request sampler settings other than the step cap live in the
served checkpoint's generation_config.json (vLLM rejects them per request), and NFE is not reported.

At first contact a probe line is tokenized here and by the server (vLLM's ``/tokenize``): a local tokenizer that
is not the served model's fails every request with that reason rather than sending ids the model reads as noise.

Failures (connection refused, DNS, timeout, HTTP 4xx/5xx, a broken or malformed answer) raise
:class:`RemoteError` with the reason; after a failure of the connection or the server, requests fail at once
until a backoff delay (doubling, capped) has passed, then the next one tries again. A cancel closes the HTTP
request at once (vLLM aborts a request whose client disconnects).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("dgls.model.remote")

COMPLETIONS = "/v1/completions"
TOKENIZE = "/tokenize"
# tokenized here and on the server at first contact: a tokenizer that is not the served model's gives garbage
TOKENIZER_PROBE = "def probe(x):\n    return x.strip()  # dgls: café, naïve ✓\n"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
POLL_S = 0.01  # how often a waiting request looks at its cancel check


class RemoteError(Exception):
    """The vLLM server could not answer a request; the message says why (never holds the API key)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status of a refusal, when there was one


class _ServerDown(RemoteError):
    """The connection or the server failed: later requests wait for the backoff before trying again."""


@dataclass(frozen=True)
class RemoteOptions:
    """Where the vLLM server is and what it serves."""

    url: str  # http(s)://host:port, the server's root (``/v1/completions`` is appended)
    model: str | None = None  # the served model name (None: the server's default model)
    tokenizer: str = "dgls-tiny"  # the served checkpoint's tokenizer: folder, embedded name or cached HF id
    api_key_env: str | None = None  # the environment variable holding the API key (the key is never stored here)
    timeout_s: float = 10.0  # a whole request, connect to last byte


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; ValueError saying what was expected otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError("expected a port between 0 and 65535") from None
    return url.rstrip("/")


def is_unencrypted(url: str) -> bool:
    """Whether requests to `url` cross a network in clear text: plain http to a host that is not loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: it may resolve anywhere


# --- the request and its answer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanvasLayout:
    """One canvas of a request: `n_free` noise slots, then the pinned suffix (cut to fit the served canvas)."""

    n_free: int
    suffix: tuple[int, ...]

    @property
    def length(self) -> int:
        """Slots on the canvas."""
        return self.n_free + len(self.suffix)

    @property
    def pinned(self) -> list[int]:
        """0-based canvas positions held to the seed: the suffix's."""
        return list(range(self.n_free, self.length))


def layout(n_free: int, suffix_ids: Sequence[int], served_canvas: int) -> CanvasLayout:
    """Fit `n_free` slots and as much of the suffix as the served canvas holds (its start matters most)."""
    n = max(1, min(n_free, served_canvas))
    return CanvasLayout(n, tuple(int(t) for t in suffix_ids[: served_canvas - n]))


def completion_body(
    prompt_ids: Sequence[int], canvas: CanvasLayout, noise: Sequence[int], *, model: str | None, max_steps: int
) -> dict[str, Any]:
    """The JSON body of one ``/v1/completions`` request for `canvas` after `prompt_ids` ([bos] + prefix)."""
    if len(noise) != canvas.n_free:
        raise ValueError(f"need {canvas.n_free} noise ids for the free slots, got {len(noise)}")
    xargs: dict[str, Any] = {
        "diffusion_canvas_length": canvas.length,
        "diffusion_seed_canvas": [*noise, *canvas.suffix],
        "diffusion_max_steps": max_steps,
        "diffusion_read_only": True,
    }
    if canvas.suffix:
        xargs["diffusion_pinned"] = canvas.pinned
    body: dict[str, Any] = {
        "prompt": list(prompt_ids),
        "max_tokens": canvas.length,
        "temperature": 1.0,
        "return_token_ids": True,
        "logprobs": 1,
        "skip_special_tokens": False,
        "vllm_xargs": xargs,
    }
    if model:
        body["model"] = model
    return body


def read_canvas(payload: Any, n_free: int) -> tuple[list[int], list[float]]:
    """The free slots of an answer: their argmax ids and log-probabilities (the pinned tail is not read).

    RemoteError when the answer is not a completion with ``token_ids`` and ``logprobs.token_logprobs`` covering
    the free slots.
    """
    try:
        choice = payload["choices"][0]
        ids, logprobs = choice["token_ids"], choice["logprobs"]["token_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise RemoteError(
            "malformed answer: expected choices[0] with token_ids and logprobs.token_logprobs "
            "(is the server vLLM, and the model a diffusion model?)"
        ) from None
    if not (isinstance(ids, list) and isinstance(logprobs, list)):
        raise RemoteError("malformed answer: token_ids and token_logprobs must be lists")
    if len(ids) < n_free or len(logprobs) < n_free:
        raise RemoteError(
            f"malformed answer: {len(ids)} token ids and {len(logprobs)} log-probabilities for a "
            f"canvas with {n_free} free slots"
        )
    ids, logprobs = ids[:n_free], logprobs[:n_free]
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
        raise RemoteError("malformed answer: token_ids must be non-negative integers")
    if not all(lp is None or (isinstance(lp, (int, float)) and not isinstance(lp, bool)) for lp in logprobs):
        raise RemoteError("malformed answer: token_logprobs must be numbers")
    return ids, [float("-inf") if lp is None else float(lp) for lp in logprobs]


def error_message(status: int, text: str) -> str:
    """The server's own message from an error body (``{"error": {"message": ...}}``), else the start of the body."""
    try:
        message = json.loads(text)["error"]["message"]
        if isinstance(message, str) and message.strip():
            return message.strip()[:500]
    except (ValueError, KeyError, TypeError):
        pass
    shown = " ".join(text.split())[:200]
    return shown or f"HTTP {status} with an empty body"


# --- HTTP ------------------------------------------------------------------------------------------------------


class VllmClient:
    """An async HTTP client on its own event loop thread; blocking calls from the model worker, cancellable."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float):
        import httpx

        self.url, self.timeout_s = url, timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dgls-vllm", daemon=True)
        self._thread.start()

        async def make() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=url, headers=headers, timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False
            )

        self._http = asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    def post_all(
        self, bodies: list[dict[str, Any]], cancel: Callable[[], bool] | None, path: str = COMPLETIONS
    ) -> list[Any]:
        """POST every body to `path` concurrently; the decoded JSON answers in order. Cancelled closes them at once."""
        from dgls.model.sampler import Cancelled

        if not self._loop.is_running():
            raise RemoteError(f"the client for {self.url} is closed")
        fut = asyncio.run_coroutine_threadsafe(self._post_all(bodies, path), self._loop)
        while True:
            try:
                return fut.result(timeout=POLL_S)
            except concurrent.futures.TimeoutError:
                if cancel is not None and cancel():
                    fut.cancel()  # cancels the tasks on the loop: httpx closes their connections
                    raise Cancelled(0) from None
                if not self._loop.is_running():  # closed under a request nobody cancelled
                    fut.cancel()
                    raise RemoteError(f"the client for {self.url} was closed") from None

    async def _post_all(self, bodies: list[dict[str, Any]], path: str) -> list[Any]:
        tasks = [asyncio.ensure_future(self._post(body, path)) for body in bodies]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                failure = task.exception()
                if failure is not None:
                    raise failure
            return [task.result() for task in tasks]
        finally:
            for task in tasks:
                task.cancel()

    async def _post(self, body: dict[str, Any], path: str) -> Any:
        try:
            return await asyncio.wait_for(self._exchange(body, path), self.timeout_s)
        except asyncio.TimeoutError:
            raise _ServerDown(f"no complete answer from {self.url} within {self.timeout_s:g} s") from None

    async def _exchange(self, body: dict[str, Any], path: str) -> Any:
        import httpx

        try:
            response = await self._http.post(path, json=body)
        except httpx.TimeoutException:
            raise _ServerDown(f"no complete answer from {self.url} within {self.timeout_s:g} s") from None
        except httpx.ConnectError as exc:
            raise _ServerDown(f"cannot connect to {self.url}: {_reason(exc)}") from None
        except httpx.TransportError as exc:  # closed mid-answer, truncated body, protocol violation
            raise _ServerDown(
                f"the connection to {self.url} broke before the answer was complete: {_reason(exc)}"
            ) from None
        if response.status_code >= 500:
            raise _ServerDown(
                f"vLLM at {self.url} failed (HTTP {response.status_code}): "
                f"{error_message(response.status_code, response.text)}"
            )
        if response.status_code >= 400:
            raise RemoteError(
                f"vLLM at {self.url} refused the request (HTTP {response.status_code}): "
                f"{error_message(response.status_code, response.text)}",
                response.status_code,
            )
        if response.status_code >= 300:
            raise RemoteError(
                f"{self.url} redirects (HTTP {response.status_code}) to "
                f"{response.headers.get('location', 'nowhere')}; dgls does not follow redirects: set "
                "backend.url to the vLLM server itself"
            )
        try:
            return response.json()
        except ValueError:
            raise RemoteError(
                f"malformed answer from {self.url}: not JSON ({' '.join(response.text.split())[:80]!r})"
            ) from None

    def close(self) -> None:
        """Close the connections and stop the loop thread."""
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._http.aclose(), self._loop).result(timeout=2)
        except Exception as exc:  # closing a broken connection: nothing left to do about it
            log.debug("closing the vLLM client: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._loop.close()


def _reason(exc: BaseException) -> str:
    """A transport error in a few words.

    The operating system's reason where there is one (connection refused, name not known), else httpx's message,
    else the exception's type.
    """
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < 10:
        chain.append(link)
        link = link.__cause__ or link.__context__
    for cause in chain:
        if isinstance(cause, OSError) and isinstance(cause.errno, int) and cause.errno > 0:
            return os.strerror(cause.errno).lower()
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


class Backoff:
    """After a failure of the server, the time before the next try: doubling from `first_s` up to `max_s`."""

    def __init__(self, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S):
        self.first_s, self.max_s = first_s, max_s
        self.delay_s = 0.0
        self.retry_at = 0.0
        self.reason: str | None = None  # the last failure, while down

    @property
    def down(self) -> bool:
        """Whether the last request failed on the connection or the server."""
        return self.reason is not None

    def failed(self, reason: str) -> None:
        """A request failed on the connection or the server: wait longer before the next one."""
        self.delay_s = min(self.max_s, self.delay_s * 2 if self.delay_s else self.first_s)
        self.retry_at = time.monotonic() + self.delay_s
        self.reason = reason

    def succeeded(self) -> None:
        """A request got an answer: the server is back."""
        self.delay_s, self.retry_at, self.reason = 0.0, 0.0, None

    def check(self) -> None:
        """Raise the last failure while its backoff delay runs."""
        if self.reason is not None and time.monotonic() < self.retry_at:
            raise RemoteError(f"{self.reason} (dgls retries with backoff)")


# --- the infiller ----------------------------------------------------------------------------------------------


class VllmInfiller:
    """Fills middles on a vLLM server; the tokenizer and the post-processing stay on this machine."""

    def __init__(self, options: RemoteOptions, tokenizer: Any, spec: Any, tokenizer_path: str, served_canvas: int):
        self.options = options
        self.served_canvas = served_canvas  # the server's canvas: a request's canvas is at most this long
        self.url = check_url(options.url)
        self.tokenizer = tokenizer
        self.spec = spec
        self.tokenizer_path = tokenizer_path
        self.client = VllmClient(self.url, _api_key(options.api_key_env), options.timeout_s)
        self.backoff = Backoff()
        self.tokenizer_check: str | None = None  # None until first contact; then "same", "unchecked" or the mismatch
        self._end_ids = {i for i in (spec.eos_id,) if i is not None}
        self._drop_ids = {spec.eos_id, spec.pad_id, spec.bos_id, spec.filler_id} - {None}

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def status(self) -> dict[str, Any]:
        """The connection as ``dgls/status`` shows it."""
        out: dict[str, Any] = {
            "kind": "vllm",
            "url": self.url,
            "connection": "down" if self.backoff.down else "ok",
            "unencrypted": is_unencrypted(self.url),
        }
        if self.backoff.down:
            out["lastError"] = self.backoff.reason
        return out

    def infill(self, prefix: str, suffix: str, **kw: Any):
        """Fill between two strings; keyword arguments as :meth:`infill_ids`."""
        return self.infill_ids(self.tokenize(prefix), self.tokenize(suffix), **kw)

    def infill_ids(
        self,
        prefix_ids: Sequence[int],
        suffix_ids: Sequence[int],
        *,
        lengths: Sequence[int] | None = None,
        n_candidates: int = 1,
        max_blocks: int = 1,
        sampler: Any = None,
        seed: int | None = 0,
        cancel: Callable[[], bool] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        min_tokens: int = 0,
        guide: Any = None,
        seed_ids: Sequence[int] = (),
        seed_alone: bool = False,
    ):
        """One canvas per (length, candidate), sent concurrently; candidates ranked as in-process.

        `max_blocks` is 1 here (a read-only canvas is the whole output); `min_tokens` > 0 drops empty middles
        (vLLM rejects a per-request minimum, so it cannot keep the end tokens out of the first slots). `seed_ids`
        (a workspace seed) start the free slots of each length's first canvas instead of noise: the seed canvas
        is what vLLM's API takes anyway (with one candidate asked for, a noise canvas runs beside the seeded one;
        both are candidates; not with `seed_alone`). `guide` (syntax-guided denoising) needs the loop in-process:
        ignored.
        """
        from dgls.model.infill import InfillResult, keep_middle, rank_candidates, rows_per_length

        t0 = time.perf_counter()
        lengths = tuple(lengths or (self.spec.canvas_lengths[-1],))
        if min(lengths) < 1 or n_candidates < 1:
            raise ValueError(
                f"need lengths >= 1 and n_candidates >= 1; got lengths={lengths}, n_candidates={n_candidates}"
            )
        max_steps = (sampler or self.spec.sampler).max_steps
        prompt = [self.spec.bos_id, *prefix_ids]
        per_length = rows_per_length(n_candidates, seed_ids, seed_alone)
        canvases = [layout(n, suffix_ids, self.served_canvas) for n in lengths for _ in range(per_length)]
        rng = random.Random(seed)
        noises = [self._noise(rng, c.n_free) for c in canvases]
        for i in range(0, len(canvases), per_length) if seed_ids else ():
            n = min(len(seed_ids), canvases[i].n_free)
            noises[i] = [*seed_ids[:n], *noises[i][n:]]
        bodies = [
            completion_body(prompt, c, noise, model=self.options.model, max_steps=max_steps)
            for c, noise in zip(canvases, noises, strict=True)
        ]
        answers = self._post(bodies, cancel)
        raw, pieces, confs, scores, ended = [], [], [], [], []
        for canvas, answer in zip(canvases, answers, strict=True):
            ids, logprobs = read_canvas(answer, canvas.n_free)
            kept, kept_conf, end = keep_middle(
                ids, [_prob(lp) for lp in logprobs], self._end_ids, self.spec.filler_id, self._drop_ids
            )
            raw.append(ids)
            pieces.append(kept)
            confs.append(kept_conf)
            scores.append(sum(logprobs) / len(logprobs))
            ended.append(end)
        if on_step is not None:
            on_step(1, 1)
        keep = [i for i in range(len(canvases)) if pieces[i] or min_tokens <= 0]
        candidates = rank_candidates(
            self.tokenizer,
            [raw[i] for i in keep],
            [pieces[i] for i in keep],
            [confs[i] for i in keep],
            [scores[i] for i in keep],
            [canvases[i].n_free for i in keep],
            [ended[i] for i in keep],
        )
        return InfillResult(
            candidates=candidates,
            nfe=0,
            blocks=1,
            ms=(time.perf_counter() - t0) * 1e3,
            encode_ms=0.0,
            prefix_cache="remote",
            prefix_tokens=len(prompt),
            suffix_tokens=len(canvases[0].suffix),
        )

    def _noise(self, rng: random.Random, n: int) -> list[int]:
        """Uniform noise ids over ``[noise_low, vocab)``, the model's training noise."""
        return [rng.randrange(self.spec.noise_low, self.spec.vocab_size) for _ in range(n)]

    def _post(
        self, bodies: list[dict[str, Any]], cancel: Callable[[], bool] | None, path: str = COMPLETIONS
    ) -> list[Any]:
        """Send the requests unless the server is in its backoff delay; keep the backoff up to date.

        The first contact also checks that the local tokenizer is the served model's (:meth:`_check_tokenizer`).
        """
        self.backoff.check()
        if path == COMPLETIONS and self.tokenizer_check is None:
            self._check_tokenizer(cancel)
        problem = self.tokenizer_check
        if problem is not None and problem not in ("same", "unchecked"):
            raise RemoteError(problem)
        try:
            answers = self.client.post_all(bodies, cancel, path)
        except _ServerDown as exc:
            first = not self.backoff.down
            self.backoff.failed(str(exc))
            if first:
                log.warning("vLLM server unavailable: %s", exc)
            raise RemoteError(f"{exc} (dgls retries with backoff)") from None
        if self.backoff.down:
            log.warning("vLLM server at %s answers again", self.url)
        self.backoff.succeeded()
        return answers

    def _check_tokenizer(self, cancel: Callable[[], bool] | None) -> None:
        """Tokenize a probe here and on the server (vLLM's ``/tokenize``); a mismatch fails every request.

        A server without ``/tokenize`` (404) is left unchecked, with a log line.
        """
        body: dict[str, Any] = {"prompt": TOKENIZER_PROBE, "add_special_tokens": False}
        if self.options.model:
            body["model"] = self.options.model
        try:
            (answer,) = self._post([body], cancel, TOKENIZE)
        except RemoteError as exc:
            if exc.status != 404:
                raise
            self.tokenizer_check = "unchecked"
            log.info(
                "%s has no %s: the tokenizer at %s is not checked against the served model's",
                self.url,
                TOKENIZE,
                self.tokenizer_path,
            )
            return
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if tokens == self.tokenize(TOKENIZER_PROBE):
            self.tokenizer_check = "same"
            return
        self.tokenizer_check = (
            f"the tokenizer at {self.tokenizer_path} is not the one {self.url} serves "
            f"{self.options.model or 'its model'} with (they split a test line differently); "
            "set backend.tokenizer to the served checkpoint's folder"
        )
        log.warning("%s", self.tokenizer_check)
        raise RemoteError(self.tokenizer_check)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()


def _prob(logprob: float) -> float:
    """A log-probability as a probability (0 for a missing one)."""
    return math.exp(logprob) if logprob > float("-inf") else 0.0


def _api_key(env_name: str | None) -> str | None:
    """The API key from the named environment variable (None when no name is given or it is unset)."""
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        log.warning("backend.apiKeyEnv names %s, but it is not set: requests go without an API key", env_name)
    return key or None


def load_vllm(options: RemoteOptions, sampler_overrides: dict[str, Any] | None = None) -> VllmInfiller:
    """The tokenizer and layout facts of the served checkpoint, loaded here without its weights.

    ModelLoadError for a tokenizer that cannot be found or loaded, or a bad URL.
    """
    from dgls.model.checkpoint import ModelLoadError, read_json, read_spec
    from dgls.model.loading import resolve_checkpoint
    from dgls.model.tokenizer import load_tokenizer

    try:
        url = check_url(options.url)
    except ValueError as exc:
        raise ModelLoadError(f"backend.url {options.url!r}: {exc}") from None
    path = resolve_checkpoint(options.tokenizer, allow_download=False)
    try:
        tokenizer = load_tokenizer(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"tokenizer of the served model expected at {path}: {exc}") from None
    config = read_json(path / "config.json")
    spec = read_spec(path, config, tokenizer)
    if sampler_overrides:
        spec = _with_sampler(spec, sampler_overrides)
    if is_unencrypted(url):
        log.warning("backend %s: plain http to a host that is not loopback: the code sent to it is unencrypted", url)
    return VllmInfiller(options, tokenizer, spec, str(path), served_canvas(config))


def served_canvas(config: dict[str, Any]) -> int:
    """The canvas the server denoises: the checkpoint's ``canvas_length`` (vLLM's default too), else 256.

    A server started with ``--diffusion-config '{"canvas_length": N}'`` may serve a shorter one; then its refusal
    (HTTP 400, "no larger than the served canvas") names the problem.
    """
    value = config.get("canvas_length", 256)
    return int(value) if isinstance(value, int) and value > 0 else 256


def _with_sampler(spec: Any, overrides: dict[str, Any]) -> Any:
    """`spec` with the step cap overridden; other sampler settings are the server's (logged when given)."""
    from dataclasses import replace

    ignored = sorted(set(overrides) - {"max_steps"})
    if ignored:
        log.warning(
            "backend vllm: %s come from the served checkpoint's generation_config.json, not from dgls "
            "settings; ignoring them",
            ", ".join(ignored),
        )
    if "max_steps" in overrides:
        return replace(spec, sampler=spec.sampler.replace(max_steps=overrides["max_steps"]))
    return spec
