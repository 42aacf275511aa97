"""The vLLM request and answer as pure functions: layout, body, reading the canvas, errors, backoff, URLs."""

from __future__ import annotations

import json

import pytest

from dgls.model.remote import (
    Backoff,
    RemoteError,
    check_url,
    completion_body,
    error_message,
    is_unencrypted,
    layout,
    read_canvas,
)


def test_layout_pins_the_suffix_after_the_free_slots():
    c = layout(4, [50, 51, 52], served_canvas=64)
    assert (c.n_free, c.suffix, c.length, c.pinned) == (4, (50, 51, 52), 7, [4, 5, 6])


def test_layout_cuts_the_suffix_end_to_fit_the_served_canvas():
    c = layout(6, list(range(100, 110)), served_canvas=8)
    assert c.suffix == (100, 101) and c.length == 8  # the suffix's start, next to the middle, is kept
    assert layout(20, [1, 2], served_canvas=8) == layout(8, [], served_canvas=8)


def test_body_seeds_noise_then_suffix_read_only():
    c = layout(3, [40, 41], served_canvas=64)
    body = completion_body([2, 10, 11], c, [900, 901, 902], model="served", max_steps=12)
    assert body["prompt"] == [2, 10, 11] and body["model"] == "served" and body["max_tokens"] == 5
    assert body["temperature"] == 1.0 and body["logprobs"] == 1 and body["return_token_ids"] is True
    assert body["skip_special_tokens"] is False
    assert body["vllm_xargs"] == {
        "diffusion_canvas_length": 5,
        "diffusion_seed_canvas": [900, 901, 902, 40, 41],
        "diffusion_pinned": [3, 4],
        "diffusion_max_steps": 12,
        "diffusion_read_only": True,
    }
    for rejected in ("seed", "min_p", "min_tokens", "logit_bias", "bad_words", "allowed_token_ids"):
        assert rejected not in body
    json.dumps(body)  # plain JSON


def test_body_without_suffix_pins_nothing_and_may_leave_the_model_out():
    body = completion_body([2], layout(4, [], 64), [9, 9, 9, 9], model=None, max_steps=3)
    assert "diffusion_pinned" not in body["vllm_xargs"] and "model" not in body
    with pytest.raises(ValueError, match="need 4 noise ids"):
        completion_body([2], layout(4, [], 64), [9], model=None, max_steps=3)


def answer(ids, logprobs):
    return {"choices": [{"index": 0, "text": "", "token_ids": ids, "logprobs": {"token_logprobs": logprobs}}]}


def test_read_canvas_keeps_only_the_free_slots():
    ids, lps = read_canvas(answer([5, 6, 7, 8], [-0.1, -0.2, None, -9.0]), n_free=2)
    assert ids == [5, 6] and lps == [-0.1, -0.2]
    _, lps = read_canvas(answer([5, 6], [None, -1]), n_free=2)
    assert lps == [float("-inf"), -1.0]


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"choices": []}, "expected choices"),
        ({"object": "error"}, "expected choices"),
        ([1, 2], "expected choices"),
        (answer([5], [-0.1]), "1 token ids and 1 log-probabilities for a canvas with 2 free slots"),
        (answer("56", [-0.1, -0.1]), "must be lists"),
        (answer([5, -6], [-0.1, -0.1]), "non-negative integers"),
        (answer([5, True], [-0.1, -0.1]), "non-negative integers"),
        (answer([5, 6], ["x", -0.1]), "must be numbers"),
    ],
)
def test_read_canvas_refuses_a_malformed_answer(payload, match):
    with pytest.raises(RemoteError, match=match):
        read_canvas(payload, n_free=2)


def test_error_message_prefers_vllms_own():
    body = json.dumps(
        {
            "error": {
                "message": "diffusion_seed_canvas must hold exactly 8 ids, got 7.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        }
    )
    assert error_message(400, body) == "diffusion_seed_canvas must hold exactly 8 ids, got 7."
    assert error_message(502, "<html>\n bad   gateway</html>") == "<html> bad gateway</html>"
    assert error_message(500, "") == "HTTP 500 with an empty body"


@pytest.mark.parametrize(
    "url, unencrypted",
    [
        ("http://127.0.0.1:8000", False),
        ("http://localhost:8000", False),
        ("http://[::1]:8000", False),
        ("https://gpu.example.com", False),
        ("http://gpu.example.com:8000", True),
        ("http://10.0.0.5:8000", True),
    ],
)
def test_plain_http_off_loopback_is_unencrypted(url, unencrypted):
    assert is_unencrypted(url) is unencrypted


def test_check_url():
    assert check_url("http://gpu:8000/") == "http://gpu:8000"
    for bad in ("gpu:8000", "ftp://gpu", "http://", "http://gpu:99999"):
        with pytest.raises(ValueError, match="expected"):
            check_url(bad)


def test_backoff_doubles_up_to_its_cap_and_resets(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("dgls.model.remote.time.monotonic", lambda: now[0])
    b = Backoff(first_s=0.5, max_s=2.0)
    b.check()  # up: nothing raised
    b.failed("cannot connect")
    with pytest.raises(RemoteError, match="cannot connect"):
        b.check()
    now[0] += 0.51
    b.check()  # the delay ran out: the next request may try
    delays = []
    for _ in range(4):
        b.failed("x")
        delays.append(b.delay_s)
    assert delays == [1.0, 2.0, 2.0, 2.0]
    b.succeeded()
    assert not b.down and b.delay_s == 0.0
    b.check()
