"""The headless command line, run as a subprocess the way scripts run it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fib.py"


def dgls(*args, stdin: str | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "dgls.cli", *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def assert_clean_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    for f in fragments:
        assert f in err[0], err[0]


def test_version():
    proc = dgls("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("dgls ")


def test_infill_a_file_keeps_the_suffix(tiny_checkpoint):
    text = EXAMPLE.read_text()
    proc = dgls(
        "infill",
        str(EXAMPLE),
        "--line",
        "7",
        "--col",
        "9",
        "--model",
        str(tiny_checkpoint),
        "--json",
        "--candidates",
        "2",
        "--steps",
        "4",
    )
    out = json.loads(proc.stdout)
    assert proc.returncode == (0 if out["edits"] else 1), proc.stderr
    assert out["range"] == {"start": [7, 9], "end": [7, 9]}
    assert out["span"] == "block" and 1 <= out["nfe"] <= 4 and out["ms"] > 0
    assert out["raw_middle"] == out["candidates"][0]["text"] and len(out["candidates"]) in (1, 2)
    lines = text.splitlines(keepends=True)
    cursor = sum(len(x) for x in lines[:6]) + 8
    filled = text[:cursor] + out["raw_middle"] + text[cursor:]
    assert filled.endswith(text[cursor:]) and filled.startswith(text[:cursor])
    raw = dgls(
        "infill",
        str(EXAMPLE),
        "--line",
        "7",
        "--col",
        "9",
        "--model",
        str(tiny_checkpoint),
        "--steps",
        "4",
        "--candidates",
        "2",
        "--raw",
    )
    assert raw.returncode == 0 and raw.stdout == out["raw_middle"] + "\n"  # same seed, same middle
    # the default output is what an editor would be offered: the best edit that keeps the file parsing, or nothing
    for e in out["edits"]:
        assert e["no_new_syntax_errors"] is True and e["parses"] is True and e["range"] == out["range"]
        ast.parse(text[:cursor] + e["text"] + text[cursor:])
    plain = dgls(
        "infill",
        str(EXAMPLE),
        "--line",
        "7",
        "--col",
        "9",
        "--model",
        str(tiny_checkpoint),
        "--steps",
        "4",
        "--candidates",
        "2",
    )
    assert out["middle"] == (out["edits"][0]["text"] if out["edits"] else None)
    if out["edits"]:
        assert plain.returncode == 0 and plain.stdout == out["middle"] + "\n"
    else:
        assert plain.returncode == 1 and plain.stdout == "" and "--raw" in plain.stderr


def test_one_suggestion_in_every_output():
    """Plain output, --json's middle and --jsonl's middle are the same suggestion (what the server offers, shaped
    and parse-checked); the model's raw best is raw_middle. At the README's spot the shipped model's raw best
    (a lone ':') is not what an editor gets, so the outputs disagreed when each took a different one."""
    text = EXAMPLE.read_text()
    cursor = text.index("range(n - 1):\n") + len("range(n - 1):\n") + 8
    spot = ["infill", str(EXAMPLE), "--line", "7", "--col", "9", "--candidates", "8"]
    plain, as_json = dgls(*spot), dgls(*spot, "--json")
    req = {"prefix": text[:cursor], "suffix": text[cursor:], "language": "python", "candidates": 8}
    jsonl = dgls("infill", "--jsonl", stdin=json.dumps(req) + "\n")
    assert plain.returncode == as_json.returncode == jsonl.returncode == 0, plain.stderr + jsonl.stderr
    out, line = json.loads(as_json.stdout), json.loads(jsonl.stdout)
    assert out["middle"] and plain.stdout == out["middle"] + "\n" == line["middle"] + "\n"
    assert out["middle"] == out["edits"][0]["text"] and out["edits"][0]["parses"] is True
    assert line["raw_middle"] == out["raw_middle"] == out["candidates"][0]["text"]
    assert line["parses"] is True and line["confidence"] == out["confidence"] == out["edits"][0]["confidence"]
    ast.parse(text[:cursor] + line["middle"] + text[cursor:])


def test_nothing_to_offer_exits_1(tiny_checkpoint, tmp_path):
    """Inside the JSON keyword `true` any insertion breaks the parse: nothing to offer, said once, exit status 1."""
    doc = tmp_path / "x.json"
    doc.write_text('{"a": true}\n')
    spot = ["infill", str(doc), "--line", "1", "--col", "9", "--model", str(tiny_checkpoint), "--candidates", "4"]
    plain = dgls(*spot)
    assert_clean_error(plain, "nothing is offered here")
    assert plain.returncode == 1 and plain.stdout == ""
    as_json = dgls(*spot, "--json")
    out = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and out["middle"] is None and out["edits"] == [] and out["nothing"]
    req = {"prefix": '{"a": tr', "suffix": "ue}\n", "language": "json", "candidates": 4}
    jsonl = dgls("infill", "--jsonl", "--model", str(tiny_checkpoint), stdin=json.dumps(req) + "\n")
    line = json.loads(jsonl.stdout)
    assert jsonl.returncode == 0 and line["middle"] is None and line["nothing"] and "raw_middle" in line


def test_jsonl_middle_leaves_out_closers_the_suggestion_replaces():
    """`print(|)` + `"hi")`: the edit replaces the `)`, so between prefix and suffix the middle is `"hi"`."""
    from dgls.cli import as_middle
    from dgls.text import Edit

    text = "print()\n"
    assert as_middle(text, 6, Edit(6, 7, '"hi")')) == '"hi"'
    assert as_middle(text, 6, Edit(6, 6, "1")) == "1"
    assert as_middle(text, 6, Edit(0, 5, "show")) is None  # not an insertion at the cursor


def test_jsonl_answers_100_requests_with_one_model_load(tiny_checkpoint):
    reqs = [
        json.dumps({"prefix": f"def f{i}(x):\n    return ", "suffix": "\n", "language": "python", "id": i})
        for i in range(100)
    ]
    proc = dgls(
        "-v", "infill", "--jsonl", "--model", str(tiny_checkpoint), "--steps", "2", stdin="\n".join(reqs) + "\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["id"] for o in out] == list(range(100))
    assert all(isinstance(o["raw_middle"], str) and 1 <= o["nfe"] <= 2 for o in out)
    assert all(isinstance(o["middle"], str) or (o["middle"] is None and o["nothing"]) for o in out)
    assert proc.stderr.count("model ready") == 1


def test_jsonl_bad_lines_are_reported_and_skipped(tiny_checkpoint):
    lines = [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"prefix": 3}),
        json.dumps({"prefix": "a", "suffix": 5}),
        json.dumps({"prefix": "a", "n_middle": 0}),
        "",
        json.dumps({"prefix": "x = ", "n_middle": 4, "id": "ok"}),
    ]
    proc = dgls("infill", "--jsonl", "--model", str(tiny_checkpoint), "--steps", "2", stdin="\n".join(lines) + "\n")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o.get("line") for o in out[:5]] == [1, 2, 3, 4, 5] and all("error" in o for o in out[:5])
    assert out[5]["id"] == "ok" and "middle" in out[5]
    assert len(proc.stderr.strip().splitlines()) == 5
    assert "invalid JSON" in out[0]["error"] and "expected a JSON object" in out[1]["error"]
    assert '"n_middle" must be an integer >= 1' in out[4]["error"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["infill", "nope.py", "--line", "1", "--col", "1"], ["nope.py: no such file"]),
        (["infill", str(EXAMPLE), "--line", "99", "--col", "1"], ["line 99 is out of range", "12 lines"]),
        (["infill", str(EXAMPLE), "--line", "1", "--col", "99"], ["column 99 is out of range"]),
        (["infill", str(EXAMPLE), "--line", "0", "--col", "1"], ["line 0 is out of range"]),
        (["infill", str(EXAMPLE)], ["needs FILE --line N --col M"]),
        (["infill", str(EXAMPLE), "--line", "1", "--col", "1", "--select-to", "x"], ["--select-to expects LINE:COL"]),
    ],
)
def test_user_mistakes_get_one_line(args, fragments):
    assert_clean_error(dgls(*args), *fragments)


def test_bad_files_and_models(tmp_path):
    binary = tmp_path / "b.py"
    binary.write_bytes(b"\x00\x01\x02abc")
    assert_clean_error(dgls("infill", str(binary), "--line", "1", "--col", "1"), "looks binary")
    latin = tmp_path / "l.py"
    latin.write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    assert_clean_error(dgls("infill", str(latin), "--line", "1", "--col", "1"), "not UTF-8 text")
    assert_clean_error(
        dgls("infill", str(EXAMPLE), "--line", "1", "--col", "1", "--model", str(tmp_path / "m")), "model not found"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU answer")
def test_fp8_experts_on_the_cpu_say_why_in_one_line(tiny_moe_checkpoint):
    proc = dgls(
        "infill", str(EXAMPLE), "--line", "7", "--col", "9", "--model", str(tiny_moe_checkpoint), "--experts", "fp8"
    )
    assert_clean_error(proc, "FP8 experts run on the dgls MoE kernel, which needs a CUDA GPU")


def test_doctor(tiny_checkpoint):
    proc = dgls("doctor", "--json", "--model", str(tiny_checkpoint))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["torch"] and report["transformers"] == "5.23.0"
    assert report["model"]["path"] == str(tiny_checkpoint) and report["model"]["params"] > 0
    assert report["kernels"]["active"] is False and report["kernels"]["why"]
    bad = dgls("doctor", "--model", "/nonexistent/model")
    assert bad.returncode == 1 and "model not found" in bad.stdout


def test_doctor_counts_parameters_as_loading_does_and_prints_no_reprs(tiny_checkpoint):
    plain = dgls("doctor", "--model", str(tiny_checkpoint))
    loaded = json.loads(dgls("doctor", "--json", "--load", "--model", str(tiny_checkpoint)).stdout)["model"]
    # one number, before and after loading (the file also holds per-layer buffers and the tied copy's names)
    assert f"params: {loaded['params']:,}" in plain.stdout, plain.stdout
    assert "{'" not in plain.stdout and "'}" not in plain.stdout, plain.stdout  # nested objects as indented lines
    assert "  active: False" in plain.stdout


def test_readme_main_command_fills_the_loop_body_with_python():
    """The README's main command, on the shipped dgls-tiny: a middle that keeps fib.py valid Python."""
    command = "dgls infill examples/fib.py --line 7 --col 9 --candidates 8"
    assert command in (EXAMPLE.parents[1] / "README.md").read_text()
    proc = dgls(*command.split()[1:])
    assert proc.returncode == 0, proc.stderr
    middle = proc.stdout.removesuffix("\n")
    assert middle.strip(), proc.stderr
    text = EXAMPLE.read_text()
    cursor = sum(len(x) for x in text.splitlines(keepends=True)[:6]) + 8
    ast.parse(text[:cursor] + middle + text[cursor:])
