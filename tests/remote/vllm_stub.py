"""A local stand-in for a vLLM server: ``/v1/completions`` with vLLM 0.32's diffusion semantics, and faults on demand.

It runs the shipped dgls-tiny through dgls's own sampler (real text, real latencies): the prompt goes into the
encoder cache, the seed canvas is the starting canvas, the pinned positions are held, and the answer is the
argmax canvas with a log-probability per position. As in vLLM, the pins are *not* applied to the answer: every
position from the first pinned one on holds junk (random ids, decodable to visible text), so a client that does
not cut there shows it. Like vLLM it renoises from the whole vocabulary.

``/tokenize`` answers with the model's tokenizer (dgls checks its own against it at first contact). Requests are
checked as vLLM checks them (``vllm_xargs`` rules, the fields vLLM rejects for diffusion, the
served model name, the API key) and refused with vLLM's error body. Faults, one per request from
:attr:`StubVllm.faults` (FIFO; none: a normal answer):

``slow:S``         answer after S seconds (a client that disconnects meanwhile is recorded in ``disconnects``)
``status:CODE``    HTTP CODE with a vLLM error body (``status:CODE:message`` sets the message)
``garbage``        200 with a body that is not JSON
``fields``         200 with JSON that is not a completion
``truncated``      200 whose body stops half-way (Content-Length promises more), then the connection closes
``disconnect``     the connection closes without an answer
``script:TEXT``    the free slots hold TEXT's tokens then filler instead of the model's canvas (junk tail kept)

:meth:`go_away` closes the listening socket (connections are refused), :meth:`come_back` listens again on the
same port.
"""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from dgls.model.backend import DiffusionGemmaDenoiser, encode
from dgls.model.canvas import Canvas
from dgls.model.loading import LoadedModel, load_model
from dgls.model.sampler import denoise

REJECTED = (
    "seed",
    "min_p",
    "min_tokens",
    "logit_bias",
    "bad_words",
    "allowed_token_ids",
    "structured_outputs",
    "response_format",
    "guided_json",
)


class Refusal(Exception):
    """A request vLLM would refuse: HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Answer:
    """What the stub computed for one request."""

    body: dict[str, Any]
    canvas: list[int]  # the whole answer canvas, junk tail included
    first_pin: int  # where the client must cut (the canvas length when nothing is pinned)
    middle: str  # the free slots up to the first end token, filler and specials dropped, decoded
    ms: float  # the model's time (encode + denoise)
    steps: int  # denoising steps run


@dataclass
class StubVllm:
    """The server; `start()` it, point dgls at `url`."""

    loaded: LoadedModel
    served_name: str = "dgls-tiny"
    api_key: str | None = None
    port: int = 0
    faults: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # {"headers": {...}, "body": ...} as received
    tokenize_requests: list[dict[str, Any]] = field(default_factory=list)  # the same for /tokenize
    answers: list[Answer] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)  # time.monotonic() when a waiting client went away
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    connections: set[socket.socket] = field(default_factory=set)  # open client connections (keep-alive)
    tokenize_route: bool = True  # answer vLLM's /tokenize (False: 404, as a server without it)
    foreign_tokenizer: bool = False  # /tokenize answers as another model's tokenizer would

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StubVllm:
        """Listen (on a free port the first time, on the same port after that)."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def go_away(self) -> None:
        """Stop listening and drop the open connections: new ones are refused."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def come_back(self) -> None:
        """Listen again on the same port."""
        self.start()

    stop = go_away

    # -- one request -------------------------------------------------------------------------------------------
    def tokenize(self, body: Any) -> dict[str, Any]:
        """vLLM's /tokenize answer for `body` (``prompt``, ``add_special_tokens``)."""
        tokens = self.loaded.tokenizer(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))
        ids = [t + 1 if self.foreign_tokenizer else t for t in tokens["input_ids"]]
        return {"count": len(ids), "max_model_len": 4096, "tokens": ids}

    def complete(self, body: Any) -> dict[str, Any]:
        """The /v1/completions answer for `body`, computed by the model (Refusal for what vLLM refuses)."""
        prompt, xargs = check_request(
            body, self.served_name, self.loaded.model.config.canvas_length, self.loaded.spec.vocab_size
        )
        script = self.faults.pop(0)[len("script:") :] if self.faults and self.faults[0].startswith("script:") else None
        t0 = time.perf_counter()
        canvas, logprobs, first_pin, steps = self.denoise(prompt, xargs, script)
        tok = self.loaded.tokenizer
        answer = Answer(
            body=body,
            canvas=canvas,
            first_pin=first_pin,
            middle=self.cut(canvas[:first_pin]),
            ms=(time.perf_counter() - t0) * 1e3,
            steps=steps,
        )
        self.answers.append(answer)
        return {
            "id": f"cmpl-stub-{len(self.answers)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.served_name,
            "choices": [
                {
                    "index": 0,
                    "text": tok.decode(canvas, skip_special_tokens=False),
                    "logprobs": {
                        "text_offset": [],
                        "token_logprobs": logprobs,
                        "tokens": [tok.convert_ids_to_tokens(t) for t in canvas],
                        "top_logprobs": [],
                    },
                    "finish_reason": "length",
                    "stop_reason": None,
                    "token_ids": canvas,
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": len(canvas),
                "total_tokens": len(prompt) + len(canvas),
            },
        }

    def denoise(
        self, prompt: list[int], xargs: dict[str, Any], script: str | None
    ) -> tuple[list[int], list[float], int, int]:
        """Run dgls's sampler on the seed canvas: the argmax canvas with junk from the first pin on, its
        log-probabilities, the first pinned position and the steps run."""
        spec, model = self.loaded.spec, self.loaded.model
        seed = xargs["diffusion_seed_canvas"]
        C, pins = len(seed), sorted(set(xargs.get("diffusion_pinned", [])))
        first_pin = pins[0] if pins else C
        cfg = spec.sampler.replace(
            max_steps=min(int(xargs.get("diffusion_max_steps", spec.sampler.max_steps)), spec.sampler.max_steps)
        )
        pinned = torch.zeros(1, C, dtype=torch.bool)
        pinned[0, pins] = True
        with self.model_lock:
            cache = encode(model, torch.tensor([prompt]))
            denoiser = DiffusionGemmaDenoiser(model, cache, noise_low=0)  # vLLM renoises from the whole vocabulary
            canvas = Canvas(
                tokens=torch.tensor([seed]),
                pinned=pinned,
                valid=torch.ones(1, C, dtype=torch.bool),
                positions=torch.arange(len(prompt), len(prompt) + C)[None],
                n_free=(C - len(pins),),
            )
            res = denoise(denoiser, canvas, cfg, generator=torch.Generator().manual_seed(0))
        ids = res.tokens[0].tolist()
        logprobs = [round(float(lp), 6) for lp in res.confidence[0].clamp(min=1e-30).log().tolist()]
        if script is not None:
            scripted = self.loaded.tokenizer(script, add_special_tokens=False)["input_ids"]
            filler = spec.filler_id if spec.filler_id is not None else spec.eos_id
            ids[:first_pin] = (scripted + [filler] * first_pin)[:first_pin]
            logprobs[:first_pin] = [-0.01] * first_pin
        junk = random.Random(len(self.answers))
        visible = [t for t in range(spec.noise_low, spec.vocab_size)]
        for k in range(first_pin, C):  # the pins are not applied to vLLM's answer: junk where they were
            ids[k] = junk.choice(visible)
            logprobs[k] = -junk.uniform(0.0, 9.0)
        return ids, logprobs, first_pin, res.steps

    def cut(self, free: list[int]) -> str:
        """The middle in the free slots: up to the first end token, filler and specials dropped."""
        spec = self.loaded.spec
        kept = []
        for t in free:
            if t == spec.eos_id:
                break
            if t not in (spec.filler_id, spec.pad_id, spec.bos_id):
                kept.append(t)
        return self.loaded.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def check_request(body: Any, served_name: str, served_canvas: int, vocab: int) -> tuple[list[int], dict[str, Any]]:
    """The prompt and vllm_xargs of a valid diffusion completion request; Refusal as vLLM refuses otherwise."""
    if not isinstance(body, dict):
        raise Refusal(400, "the request body must be a JSON object")
    if body.get("model") not in (None, served_name):
        raise Refusal(404, f"The model `{body.get('model')}` does not exist.")
    for key in REJECTED:
        if body.get(key) is not None:
            raise Refusal(400, f"{key} is not supported for diffusion models")
    if body.get("temperature") not in (None, 1.0, 1):
        raise Refusal(
            400, "diffusion models take their temperature schedule from the checkpoint; temperature must be 1.0"
        )
    prompt = body.get("prompt")
    if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) and 0 <= t < vocab for t in prompt)):
        raise Refusal(400, "prompt must be a non-empty list of token ids")
    x = body.get("vllm_xargs") or {}
    seed = x.get("diffusion_seed_canvas")
    width = x.get("diffusion_canvas_length", served_canvas)
    if not (isinstance(width, int) and 0 < width <= served_canvas):
        raise Refusal(400, "diffusion_canvas_length must be a positive integer no larger than the served canvas.")
    if not (isinstance(seed, list) and len(seed) == width and all(isinstance(t, int) and 0 <= t < vocab for t in seed)):
        raise Refusal(400, f"diffusion_seed_canvas must hold exactly {width} ids in [0, {vocab}).")
    pins = x.get("diffusion_pinned", [])
    if not (isinstance(pins, list) and all(isinstance(p, int) and 0 <= p < width for p in pins)):
        raise Refusal(400, "diffusion_pinned positions must lie inside the canvas.")
    if x.get("diffusion_read_only") not in (True, 1):
        raise Refusal(400, "this stub answers read-only canvases only (diffusion_read_only: true)")
    return prompt, x


def error_body(status: int, message: str) -> dict[str, Any]:
    """vLLM's ErrorResponse."""
    kind = {400: "BadRequestError", 401: "Unauthorized", 404: "NotFoundError"}.get(status, "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def _handler(stub: StubVllm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def log_message(self, *args: Any) -> None:
            return None

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle holds the body until the client's delayed
            # ACK (40 ms on Linux); asyncio servers (uvicorn, under vLLM) set it by default
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stub.connections.add(self.connection)

        def finish(self) -> None:
            stub.connections.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{"id": stub.served_name, "object": "model"}]})
            else:
                self.send_json(404, error_body(404, f"no route {self.path}"))

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            received = {"headers": dict(self.headers), "body": body}
            if stub.api_key is not None and self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                return self.send_json(401, {"error": "Unauthorized"})
            if self.path == "/tokenize" and stub.tokenize_route:
                stub.tokenize_requests.append(received)
                return self.send_json(200, stub.tokenize(body))
            if self.path != "/v1/completions":
                return self.send_json(404, error_body(404, f"no route {self.path}"))
            stub.requests.append(received)
            fault = stub.faults.pop(0) if stub.faults and not stub.faults[0].startswith("script:") else ""
            if fault.startswith("slow:") and not self.wait(float(fault[5:])):
                return None
            if fault == "disconnect":
                self.close_now()
                return None
            if fault.startswith("status:"):
                _, code, *message = fault.split(":", 2)
                return self.send_json(int(code), error_body(int(code), message[0] if message else "injected"))
            if fault == "garbage":
                return self.send_bytes(200, b"<html>502 Bad Gateway</html>")
            if fault == "fields":
                return self.send_json(200, {"object": "text_completion", "choices": [{"text": "x"}]})
            try:
                answer = stub.complete(body)
            except Refusal as exc:
                return self.send_json(exc.status, error_body(exc.status, str(exc)))
            if fault == "truncated":
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_now()
                return None
            return self.send_json(200, answer)

        def wait(self, seconds: float) -> bool:
            """Sleep `seconds` unless the client goes away first (recorded); whether it is still there."""
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.005)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    stub.disconnects.append(time.monotonic())
                    self.close_connection = True
                    return False
            return True

        def close_now(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def send_json(self, status: int, payload: Any) -> None:
            self.send_bytes(status, json.dumps(payload).encode())

        def send_bytes(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def load_stub_model(name: str = "dgls-tiny") -> LoadedModel:
    """The model the stub serves, on the CPU, warmed up.

    The first forward pass of a process costs seconds (lazy initialisation in torch); run it here so that the
    clients' timeouts meet the steady state, as they would meet a vLLM server that has been up for a while.
    """
    loaded = load_model(name, device="cpu")
    spec = loaded.spec
    seed = [spec.noise_low] * 8
    StubVllm(loaded).denoise(
        [spec.bos_id, spec.noise_low],
        {"diffusion_seed_canvas": seed, "diffusion_pinned": [7], "diffusion_max_steps": 2},
        None,
    )
    return loaded


def main() -> None:
    """Serve until interrupted: ``python tests/remote/vllm_stub.py [PORT]`` (for trying dgls by hand)."""
    import sys

    stub = StubVllm(load_stub_model(), port=int(sys.argv[1]) if len(sys.argv) > 1 else 8000).start()
    print(f"stub vLLM serving dgls-tiny at {stub.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
