import json
import random
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion, DynamicCache

from dgls.model import train
from dgls.model.tokenizer import FILLER, train_tokenizer
from dgls.model.train import InfillExample, InfillExamples, TrainConfig, collate, infill_loss

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = [
    "textwrap.py",
    "bisect.py",
    "colorsys.py",
    "keyword.py",
    "glob.py",
    "fnmatch.py",
    "heapq.py",
    "shlex.py",
    "string.py",
    "token.py",
    "stat.py",
    "copy.py",
    "sched.py",
    "queue.py",
    "numbers.py",
]
TINY = [
    "--vocab-size",
    "400",
    "--hidden",
    "32",
    "--layers",
    "2",
    "--heads",
    "2",
    "--kv-heads",
    "1",
    "--head-dim",
    "16",
    "--intermediate",
    "64",
    "--canvas-lengths",
    "8,16",
    "--max-prefix",
    "32",
    "--min-prefix",
    "4",
    "--max-suffix",
    "8",
    "--batch",
    "4",
    "--eval-batches",
    "2",
    "--warmup",
    "2",
    "--log-every",
    "1",
    "--threads",
    "2",
]


@pytest.fixture(scope="module")
def fake_stdlib(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdlib")
    for name in MODULES:
        shutil.copy(STDLIB / name, root / name)
    return root


@pytest.fixture(scope="module")
def tok(fake_stdlib, tmp_path_factory):
    texts = [p.read_text() for p in sorted(fake_stdlib.glob("*.py"))]
    return train_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=400)


def _tiny_model(tok):
    cfg = TrainConfig(
        vocab_size=len(tok),
        hidden=32,
        layers=2,
        heads=2,
        kv_heads=1,
        head_dim=16,
        intermediate=64,
        canvas_lengths=[8, 16],
    )
    torch.manual_seed(0)
    return DiffusionGemmaForBlockDiffusion(train.build_model_config(cfg, tok)).eval()


def test_collate_follows_the_layout_contract(tok):
    filler = tok.convert_tokens_to_ids(FILLER)
    exs = [
        InfillExample([10, 11, 12], [20, 21], [30, 31, 32], "line"),
        InfillExample([], [20, 21, 22, 23], [], "fill"),
        InfillExample([13], [], [33], "empty"),
    ]
    b = collate(exs, 4, tok)
    assert b.prefix.tolist() == [
        [tok.bos_token_id, 10, 11, 12],
        [tok.bos_token_id, 0, 0, 0],
        [tok.bos_token_id, 13, 0, 0],
    ]
    assert b.prefix_mask.sum(1).tolist() == [4, 1, 2]
    assert b.canvas.tolist() == [
        [20, 21, filler, filler, 30, 31, 32],
        [20, 21, 22, 23, tok.pad_token_id, tok.pad_token_id, tok.pad_token_id],
        [filler, filler, filler, filler, 33, tok.pad_token_id, tok.pad_token_id],
    ]
    assert b.free[:, :4].all() and not b.free[:, 4:].any()
    assert b.middle.sum(1).tolist() == [2, 4, 0]
    assert b.canvas_mask.sum(1).tolist() == [7, 4, 5]
    assert b.positions[:, 0].tolist() == [4, 1, 2]  # canvas starts right after <bos> + prefix
    assert (b.positions[:, 1:] - b.positions[:, :-1] == 1).all()
    with pytest.raises(ValueError, match="does not fit 4 free slots"):
        collate([InfillExample([], [1] * 5, [], "span")], 4, tok)


def test_padded_batch_matches_examples_run_alone(tok):
    """Right-padded prefixes and canvases with a 2-D mask must give each example's own logits."""
    model = _tiny_model(tok)
    exs = [
        InfillExample(list(range(20, 29)), [40, 41], [50, 51, 52], "line"),
        InfillExample([], [42], [], "line"),
        InfillExample([25, 26], [43, 44, 45, 46], [53], "fill"),
    ]
    b = collate(exs, 4, tok)
    V = model.config.get_text_config().vocab_size
    sc = torch.randn(3, b.canvas.shape[1], V, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
        P = b.prefix.shape[1]
        model.model.encoder(
            input_ids=b.prefix,
            attention_mask=b.prefix_mask.long(),
            past_key_values=cache,
            position_ids=torch.arange(P)[None].expand(3, P),
        )
        batched = model(
            decoder_input_ids=b.canvas,
            past_key_values=cache,
            decoder_position_ids=b.positions,
            decoder_attention_mask=torch.cat([b.prefix_mask, b.canvas_mask], 1),
            self_conditioning_logits=sc,
        ).logits
        for r, ex in enumerate(exs):
            p = torch.tensor([[tok.bos_token_id] + ex.prefix])
            c = b.canvas[r : r + 1, : int(b.canvas_mask[r].sum())]
            cache = DynamicCache(config=model.config.get_text_config(decoder=True))
            model.model.encoder(input_ids=p, past_key_values=cache, position_ids=torch.arange(p.shape[1])[None])
            pos = torch.arange(p.shape[1], p.shape[1] + c.shape[1])[None]
            alone = model(
                decoder_input_ids=c,
                past_key_values=cache,
                decoder_position_ids=pos,
                self_conditioning_logits=sc[r : r + 1, : c.shape[1]],
            ).logits
            diff = (alone[0] - batched[r, : c.shape[1]]).abs().max().item()
            assert diff < 1e-4, f"example {r}: max abs diff {diff}"


def test_examples_middles_fit_and_are_reproducible(tok, fake_stdlib):
    texts = [p.read_text() for p in sorted(fake_stdlib.glob("*.py"))]
    cfg = TrainConfig(max_prefix=64, max_suffix=16)
    examples = InfillExamples(texts, tok, cfg)
    a = [examples.sample(random.Random(7), 16) for _ in range(1)]
    rng1, rng2 = random.Random(3), random.Random(3)
    s1 = [examples.sample(rng1, 16) for _ in range(200)]
    s2 = [examples.sample(rng2, 16) for _ in range(200)]
    assert s1 == s2 and a[0] == examples.sample(random.Random(7), 16)
    kinds = {e.kind for e in s1}
    assert {"rest_of_line", "line", "lines", "span", "fill"} <= kinds, kinds
    assert all(len(e.middle) <= 16 and len(e.prefix) <= 63 and len(e.suffix) <= 16 for e in s1)
    assert any(len(e.middle) == 16 for e in s1) and any(not e.suffix for e in s1)
    # editor-shaped middles end at a line end: the suffix (when present) starts a new line
    lines = [e for e in s1 if e.kind == "line" and e.suffix]
    assert lines and all(tok.decode(e.suffix).startswith("\n") or tok.decode(e.middle).endswith("\n") for e in lines)


def test_loss_ignores_pinned_suffix_and_is_finite(tok):
    model = _tiny_model(tok).train()
    b = collate(
        [InfillExample([20, 21], [30, 31], [40, 41, 42], "line"), InfillExample([22], [32], [43], "line")], 4, tok
    )
    loss, stats = infill_loss(model, b, torch.Generator().manual_seed(0), 9, 0.05, sc_prob=1.0)
    assert torch.isfinite(loss) and stats["n_free"] == 8 and stats["n_middle"] == 3
    loss.backward()
    emb = model.model.decoder.embed_tokens.weight.grad
    assert emb is not None and torch.isfinite(emb).all()
    # changing only the pinned suffix's targets... is impossible: it is the input. Changing a padded slot must
    # not move the loss at all.
    b2 = collate(
        [InfillExample([20, 21], [30, 31], [40, 41, 42], "line"), InfillExample([22], [32], [43], "line")], 4, tok
    )
    b2.canvas[1, 6] = 77  # a padding slot (masked out of attention and of the loss)
    l2, _ = infill_loss(model, b2, torch.Generator().manual_seed(0), 9, 0.05, sc_prob=1.0)
    assert abs(l2.item() - loss.item()) < 1e-5


def test_lr_schedule_warms_up_and_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    f = [train._lr_factor(cfg, s, 0.0) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] == pytest.approx(0.1, abs=0.01)
    timed = TrainConfig(steps=10**6, warmup=0, max_minutes=1.0, lr_by_time=True, min_lr_ratio=0.1)
    assert train._lr_factor(timed, 5, 60.0) == pytest.approx(0.1)


def _losses(run_dir):
    recs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r and "eval_ce" not in r}


def test_end_to_end_corpus_tokenizer_train_save_reload_resume(fake_stdlib, tmp_path):
    common = TINY + [
        "--stdlib",
        str(fake_stdlib),
        "--corpus",
        str(tmp_path / "corpus"),
        "--heldout-fraction",
        "0.3",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--save-every",
        "2",
    ]
    run, out = tmp_path / "run", tmp_path / "model"
    assert train.main(common + ["--run-dir", str(run), "--out", str(out)]) == 0

    # the shippable folder: safetensors only, reloads with transformers' own classes
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "dgls.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "run_config.json",
    } <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names), names
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(out), experts_implementation="eager")
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.get_text_config().vocab_size == len(tok) == 400
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image|>")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert len(list(f.keys())) > 0
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["eos_token_id"], gen["pad_token_id"], gen["bos_token_id"]) == (
        tok.eos_token_id,
        tok.pad_token_id,
        tok.bos_token_id,
    )
    assert model.generation_config.sampler_config.entropy_bound == pytest.approx(0.1)
    d = json.loads((out / "dgls.json").read_text())
    assert gen["max_denoising_steps"] == d["max_steps"] and gen["t_min"] == d["t_min"]
    assert d["filler_token_id"] == tok.convert_tokens_to_ids(FILLER)
    assert d["noise_low"] == max(tok.all_special_ids) + 1 and d["sc_raw_logits"] is True
    assert d["canvas_lengths"] == [8, 16]
    assert d["languages"] == ["python"]  # what the corpus holds, for the server to tell
    for key in ("max_steps", "entropy_bound", "t_max", "t_min", "stability_threshold", "confidence_threshold"):
        assert key in d
    summary = json.loads((out / "run_config.json").read_text())["summary"]
    assert summary["steps"] == 4 and summary["eval_final"]["eval_ce"] > 0
    assert summary["eval_init"]["eval_ce"] == pytest.approx(summary["eval_init"]["eval_ce"])

    # the reloaded weights are the trained ones
    state = torch.load(run / "train_state.pt", weights_only=False)["model"]
    loaded = model.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k

    # a run split in two with --resume reproduces the uninterrupted one exactly
    run2 = tmp_path / "run2"
    assert train.main(common + ["--run-dir", str(run2), "--out", str(tmp_path / "m2"), "--stop-at", "2"]) == 0
    assert train.main(common + ["--run-dir", str(run2), "--out", str(tmp_path / "m2"), "--resume"]) == 0
    full, split = _losses(run), _losses(run2)
    assert sorted(full) == sorted(split) == [1, 2, 3, 4]
    for s in full:
        assert split[s] == pytest.approx(full[s], rel=1e-5, abs=1e-5), (s, full[s], split[s])


def test_resume_without_state_is_a_clear_error(tmp_path, fake_stdlib, capsys):
    rc = train.main(
        TINY
        + [
            "--stdlib",
            str(fake_stdlib),
            "--corpus",
            str(tmp_path / "c"),
            "--heldout-fraction",
            "0.3",
            "--run-dir",
            str(tmp_path / "r"),
            "--resume",
        ]
    )
    assert rc == 2
    assert "--resume expects" in capsys.readouterr().err


def test_encoder_next_token_loss_matches_rows_run_alone(tok):
    """``ar_weight`` adds the encoder's next-token CE over the real prefix tokens only (padding ignored)."""
    model = _tiny_model(tok).eval()
    exs = [InfillExample([20, 21, 22, 23, 24], [30], [40], "line"), InfillExample([25, 26], [31], [41], "line")]
    b = collate(exs, 4, tok)
    base, s0 = infill_loss(model, b, torch.Generator().manual_seed(0), 9, 0.05, sc_prob=0.0)
    with_ar, s1 = infill_loss(model, b, torch.Generator().manual_seed(0), 9, 0.05, sc_prob=0.0, ar_weight=0.5)
    assert s0["ce_ar"] != s0["ce_ar"]  # nan: off by default
    assert s1["loss"] == pytest.approx(s0["loss"], abs=1e-6)  # the diffusion part is unchanged
    # independent: each row alone, no padding, summed CE over its next-token targets
    cap = model.config.get_text_config().final_logit_softcapping
    total, n = 0.0, 0
    with torch.no_grad():
        for ex in exs:
            ids = torch.tensor([[tok.bos_token_id, *ex.prefix]])
            h = model.model.encoder(
                input_ids=ids, past_key_values=DynamicCache(config=model.config.get_text_config(decoder=True))
            ).last_hidden_state
            logits = model.lm_head(h[:, :-1])
            logits = torch.tanh(logits / cap) * cap if cap else logits
            total += torch.nn.functional.cross_entropy(logits[0].float(), ids[0, 1:], reduction="sum").item()
            n += ids.shape[1] - 1
    assert s1["ce_ar"] == pytest.approx(total / n, rel=1e-4)
    assert with_ar.item() == pytest.approx(base.item() + 0.5 * total / n, rel=1e-4)


def _evals(run_dir):
    recs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["eval_ce"] for r in recs if "eval_ce" in r]


def test_init_from_warm_starts_from_a_model_folder(fake_stdlib, tmp_path, capsys):
    common = TINY + [
        "--stdlib",
        str(fake_stdlib),
        "--corpus",
        str(tmp_path / "corpus"),
        "--heldout-fraction",
        "0.3",
        "--steps",
        "3",
        "--eval-every",
        "100",
        "--amp",
        "off",
    ]
    assert train.main(common + ["--run-dir", str(tmp_path / "a"), "--out", str(tmp_path / "ma")]) == 0
    trained = _evals(tmp_path / "a")[-1]
    # no state in the new run dir: --resume falls back to the folder, with a fresh optimizer and step 0
    assert (
        train.main(
            common
            + [
                "--run-dir",
                str(tmp_path / "b"),
                "--out",
                str(tmp_path / "mb"),
                "--resume",
                "--init-from",
                str(tmp_path / "ma"),
            ]
        )
        == 0
    )
    first = _evals(tmp_path / "b")[0]
    assert first == pytest.approx(trained, rel=1e-5)  # the warm start begins where the first run ended
    assert first < _evals(tmp_path / "a")[0]  # ... which is not where a fresh model begins
    # a folder of another shape is a clear error
    capsys.readouterr()
    rc = train.main(common + ["--run-dir", str(tmp_path / "c"), "--hidden", "48", "--init-from", str(tmp_path / "ma")])
    assert rc == 2 and "do not fit" in capsys.readouterr().err


def test_autocast_choice():
    cpu = torch.device("cpu")
    ctx, name = train.autocast_for(train.TrainConfig(amp="off"), cpu)
    assert name == "fp32"
    ctx, name = train.autocast_for(train.TrainConfig(amp="bf16"), cpu)
    assert name == "bf16-autocast"
    with ctx:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    _, name = train.autocast_for(train.TrainConfig(amp="auto"), cpu)
    assert name == ("bf16-autocast" if train.bf16_pays_off(cpu) else "fp32")
    with pytest.raises(ValueError, match="amp must be"):
        train.autocast_for(train.TrainConfig(amp="fp16"), cpu)


def test_bf16_sharded_save_reloads_as_the_rounded_weights(tok, tmp_path):
    from dgls.model.loading import load_model

    cfg = train.TrainConfig(
        vocab_size=len(tok),
        hidden=64,
        layers=2,
        heads=2,
        kv_heads=1,
        head_dim=32,
        intermediate=4096,
        canvas_lengths=[8, 16],
        save_dtype="bfloat16",
        max_shard_mb=1,
    )
    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(train.build_model_config(cfg, tok)).eval()  # about 3 MB in bf16
    out = train.save_model_folder(model, tok, cfg, tmp_path / "m")
    shards = sorted(out.glob("model*.safetensors"))
    assert len(shards) > 1 and all(p.stat().st_size <= 1_100_000 for p in shards)
    loaded = load_model(out, device="cpu")  # the product's loader reads the shards, upcast to fp32 on a CPU
    got = loaded.model.state_dict()
    for k, v in model.state_dict().items():
        assert got[k].dtype == torch.float32
        assert torch.equal(got[k], v.to(torch.bfloat16).float()), k
    assert next(model.parameters()).dtype == torch.float32  # the trained model itself is not cast


def test_export_ships_a_run_in_bf16_keeping_tuned_sampler_defaults(fake_stdlib, tmp_path):
    common = TINY + [
        "--stdlib",
        str(fake_stdlib),
        "--corpus",
        str(tmp_path / "corpus"),
        "--heldout-fraction",
        "0.3",
        "--steps",
        "2",
        "--eval-every",
        "100",
        "--amp",
        "off",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    assert train.main(common) == 0
    dest = tmp_path / "shipped"
    dest.mkdir()
    (dest / "dgls.json").write_text(json.dumps({"t_max": 0.3, "t_min": 0.1}))  # tuned earlier, by hand
    (dest / "README.md").write_text("model card\n")
    assert train.main(common + ["--export-to", str(dest), "--save-dtype", "bfloat16"]) == 0
    d = json.loads((dest / "dgls.json").read_text())
    assert (d["t_max"], d["t_min"]) == (0.3, 0.1) and d["canvas_lengths"] == [8, 16]
    assert (dest / "README.md").read_text() == "model card\n" and (dest / "eval_log.jsonl").is_file()
    with safe_open(str(dest / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    trained = DiffusionGemmaForBlockDiffusion.from_pretrained(
        str(tmp_path / "r" / "model"), experts_implementation="eager"
    )
    shipped = DiffusionGemmaForBlockDiffusion.from_pretrained(
        str(dest), experts_implementation="eager", dtype=torch.float32
    )
    for k, v in trained.state_dict().items():
        assert torch.equal(shipped.state_dict()[k], v.to(torch.bfloat16).float()), k
