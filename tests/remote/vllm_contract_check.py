"""Check request bodies (and answers) against vLLM's own models; run with the vLLM venv's python, not dgls's.

Reads JSON lines on stdin, writes one JSON line per input line:

- ``{"body": {...}, "canvas_length": C, "vocab_size": V}``: the request is validated by vLLM's
  ``CompletionRequest``, turned into ``SamplingParams`` as vLLM's OpenAI server does, and checked by
  ``validate_diffusion_sampling_params`` (what vLLM's input processor runs for a diffusion model served with a
  canvas of C). Out: ``{"ok": true, "extra_args": ..., "max_tokens": ..., "ignore_eos": ..., "temperature": ...,
  "logprobs": ..., "skip_special_tokens": ..., "prompt": ...}`` or ``{"ok": false, "error": "..."}``.
- ``{"response": {...}}`` / ``{"error_body": {...}}``: an answer of the test server, validated by vLLM's
  ``CompletionResponse`` / ``ErrorResponse``.
- ``{"tokenize_body": {...}}`` / ``{"tokenize_response": {...}}``: dgls's tokenizer check (``/tokenize``) and the
  test server's answer, validated by ``TokenizeCompletionRequest`` / ``TokenizeResponse``.

Only ``vllm.entrypoints.openai.completion.protocol``, ``vllm.entrypoints.serve.engine.protocol``,
``vllm.entrypoints.serve.tokenize.protocol`` and ``vllm.utils.diffusion`` are imported (with what they import:
vllm's config package, torch, transformers, pydantic); no engine, no model, no GPU. ``.ci/run`` installs that
venv (``.ci/vllm-contract-requirements.txt``).
"""

from __future__ import annotations

import json
import sys

from vllm.entrypoints.openai.completion.protocol import CompletionRequest, CompletionResponse
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.entrypoints.serve.tokenize.protocol import TokenizeCompletionRequest, TokenizeResponse
from vllm.utils.diffusion import validate_diffusion_sampling_params


def check_body(item: dict) -> dict:
    request = CompletionRequest.model_validate(item["body"])
    max_tokens = request.max_tokens if request.max_tokens is not None else item["canvas_length"]
    params = request.to_sampling_params(max_tokens=max_tokens)
    validate_diffusion_sampling_params(params, canvas_length=item["canvas_length"], vocab_size=item["vocab_size"])
    return {
        "ok": True,
        "extra_args": params.extra_args,
        "max_tokens": params.max_tokens,
        "ignore_eos": params.ignore_eos,
        "temperature": params.temperature,
        "logprobs": params.logprobs,
        "skip_special_tokens": params.skip_special_tokens,
        "prompt": request.prompt,
        "return_token_ids": request.return_token_ids,
    }


def check(item: dict) -> dict:
    try:
        if "body" in item:
            return check_body(item)
        if "response" in item:
            CompletionResponse.model_validate(item["response"])
            return {"ok": True}
        if "tokenize_body" in item:
            TokenizeCompletionRequest.model_validate(item["tokenize_body"])
            return {"ok": True}
        if "tokenize_response" in item:
            TokenizeResponse.model_validate(item["tokenize_response"])
            return {"ok": True}
        ErrorResponse.model_validate(item["error_body"])
        return {"ok": True}
    except Exception as exc:  # pydantic's ValidationError, vLLM's VLLMValidationError, ValueError
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def main() -> int:
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(check(json.loads(line))) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
