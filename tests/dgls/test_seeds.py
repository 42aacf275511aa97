import os
import stat
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dgls import seeds
from dgls.seeds import Seed, SeedIndex

CALL = "    user = client.fetch_user(user_id, timeout=30, retries=3)\n"


def complete(index: SeedIndex, name: str, marked: str, **kwargs) -> Seed | None:
    """Index `marked` (the cursor written as `|`) as document `name` and look up a seed at its cursor."""
    text = textwrap.dedent(marked)
    offset = text.index("|")
    text = text.replace("|", "", 1)
    index.update(name, text)
    return index.lookup(text[:offset], exclude_at=(name, offset), **kwargs)


# --- what a seed is ------------------------------------------------------------------------------------------


def test_a_repeated_call_seeds_its_arguments_from_another_document():
    index = SeedIndex()
    index.update("file:///a.py", "def load(client, user_id):\n" + CALL + "    return user\n")
    seed = complete(index, "file:///b.py", "def other(client, user_id):\n    u = client.fetch_user(|\n")
    assert seed is not None
    assert seed.text == "user_id, timeout=30, retries=3)"
    assert seed.source == "file:///a.py"
    assert seed.match_tokens == 5  # = client . fetch_user (
    assert seed.match_chars == len("=client.fetch_user(")
    assert index.lookup("u = client.fetch_user(") is None  # without exclude_at, b's own line matches longer
    a = "def load(client, user_id):\n" + CALL
    assert seed.offset == a.index("user_id, timeout")


def test_whitespace_does_not_matter_for_the_match():
    index = SeedIndex()
    index.update("a", "result = compute_total( items ,  tax_rate ) + 1\n")
    seed = index.lookup("x = compute_total(items,tax_rate")
    assert seed is not None and seed.text == " ) + 1"  # the continuation is the text as it is there


def test_a_word_being_typed_must_begin_the_next_token_and_the_seed_is_its_rest():
    index = SeedIndex()
    index.update("a", CALL)
    seed = index.lookup("x = client.fetch_us")
    assert seed is not None
    assert seed.text == "er(user_id, timeout=30, retries=3)"
    assert seed.match_tokens == 4  # client . and the partial fetch_us
    assert index.lookup("x = client.fetch_id") is None  # no token there starts with fetch_id


def test_after_a_space_the_seed_starts_at_the_next_word():
    index = SeedIndex()
    index.update("a", "total_price = base_price + shipping_cost\n")
    seed = index.lookup("p = base_price + ")
    assert seed is not None and seed.text == "shipping_cost"


def test_after_a_line_break_the_seed_is_the_next_line():
    index = SeedIndex()
    index.update("a", "TABLE = [\n    ('alpha', 1),\n    ('beta', 2),\n]\n")
    seed = index.lookup("OTHER = [\n    ('alpha', 1),\n    ")
    assert seed is not None and seed.text == "('beta', 2),"


def test_the_seed_stops_at_the_end_of_the_line_and_at_max_chars():
    index = SeedIndex()
    index.update("a", "x = frobnicate(alpha, beta)\ny = 2\n")
    assert index.lookup("z = frobnicate(").text == "alpha, beta)"
    assert index.lookup("z = frobnicate(", max_chars=5).text == "alpha"


def test_an_empty_continuation_is_no_seed():
    index = SeedIndex()
    index.update("a", "value = frobnicate(alpha, beta)\n\n")
    assert index.lookup("other = frobnicate(alpha, beta)") is None  # the line ended there


# --- never itself --------------------------------------------------------------------------------------------


def test_the_cursor_never_matches_itself():
    index = SeedIndex()
    # the only occurrence of these tokens is at the cursor, with text after it
    assert complete(index, "a", "x = client.fetch_user(|user_id, timeout=30)\n") is None
    assert complete(index, "a", "x = client.fetch_us|er(user_id, timeout=30)\n") is None
    assert complete(index, "a", "x = client.fetch_user(|\n" + CALL.strip()) is not None  # a line below is fine


def test_a_continuation_from_above_is_cut_at_the_cursor():
    index = SeedIndex()
    seed = complete(index, "a", "lookup_value(key_a); lookup_value(key_a);|tail_text\n", min_tokens=4, min_chars=10)
    assert seed is not None
    assert seed.text == " lookup_value(key_a);"  # the earlier occurrence's rest of line stops at the cursor


def test_an_occurrence_straddling_the_cursor_is_not_used():
    index = SeedIndex()
    # periodic text: the tokens before the cursor also occur shifted by one period across it
    seed = complete(index, "a", "go(abc) go(abc) go(abc) go(|abc) go(abc)\n")
    assert seed is not None and seed.source == "a"
    assert seed.text == "abc) go("  # from above, up to the cursor (at 27); below, it would match 4 tokens at most
    assert seed.offset + len(seed.text) == 27
    assert seed.match_tokens == 10


def test_the_nearest_occurrence_above_the_cursor_wins_a_tie():
    index = SeedIndex()
    index.update("other", "v = client.fetch_user(remote_id)\n")
    text = "v = client.fetch_user(first_id)\nv = client.fetch_user(second_id)\nv = client.fetch_user("
    seed = complete(index, "here", text + "|")
    assert seed is not None and seed.text == "second_id)" and seed.source == "here"


# --- ranking -------------------------------------------------------------------------------------------------


def test_too_short_matches_give_none():
    index = SeedIndex()
    index.update("a", "f(x)\nab.cd(1)\n")
    assert index.lookup("f(") is None  # 2 tokens
    assert index.lookup("ab.cd(") is None  # 4 tokens but 6 characters
    assert index.lookup("") is None
    assert index.lookup("ab.cd(", min_chars=6) is not None


def test_the_longer_match_wins_over_a_more_frequent_short_one():
    index = SeedIndex()
    index.update("a", "a = send_mail(to, subject)\n" * 3 + "b = prepare(); send_mail(admin_address)\n")
    seed = index.lookup("prepare(); send_mail(")
    assert seed is not None
    assert seed.text == "admin_address)"
    assert seed.match_tokens == 6  # prepare ( ) ; send_mail (
    assert seed.votes == 1


def test_frequency_breaks_ties_between_equally_long_matches():
    index = SeedIndex()
    index.update("far", "    mailer.send_mail(to, subject)\n" * 2)
    index.update("near", "    mailer.send_mail(admin_address)\n")  # nearest (most recently updated), yet out-voted
    seed = index.lookup("\n    mailer.send_mail(")
    assert seed is not None
    assert seed.text == "to, subject)" and seed.votes == 2


def test_without_a_majority_the_nearest_document_wins():
    index = SeedIndex()
    index.update("older", "    mailer.send_mail(to, subject)\n")
    index.update("newer", "    mailer.send_mail(admin_address)\n")
    assert index.lookup("\n    mailer.send_mail(").source == "newer"


# --- documents -----------------------------------------------------------------------------------------------


def test_update_replaces_a_document_and_forget_drops_it():
    index = SeedIndex()
    index.update("a", CALL)
    assert index.lookup("x = client.fetch_user(").text.startswith("user_id")
    index.update("a", CALL.replace("user_id", "account_id"))
    assert index.lookup("x = client.fetch_user(").text.startswith("account_id")
    index.forget("a")
    assert "a" not in index
    assert index.lookup("x = client.fetch_user(") is None
    index.forget("never-seen")


def test_incremental_updates_index_like_a_fresh_index():
    text = "".join(f"value_{i} = compute(item_{i}, scale={i})\n" for i in range(300))
    edited = SeedIndex()
    edited.update("a", text)
    for n in range(1, 30):  # type a new line at the end, a character at a time, and edit a middle line
        typed = text.replace("scale=150", "scale=151") + "value_x = compute(item_7, "[:n]
        edited.update("a", typed)
    fresh = SeedIndex()
    fresh.update("a", typed)
    assert edited._open["a"].codes == fresh._open["a"].codes
    for prefix in ("value_x = compute(item_7, ", "= compute(item_150, ", "compute(item_299"):
        assert edited.lookup(prefix, exclude_at=("a", len(typed))) == fresh.lookup(prefix, exclude_at=("a", len(typed)))
    assert edited.lookup("y = compute(item_150, ").text == "scale=151)"


def test_non_ascii_text_and_offsets():
    index = SeedIndex()
    index.update("a", "名前 = 'é' + greet_user(名前, '😀😀', loud=True)\n")
    seed = index.lookup("x = greet_user(名前, ")
    assert seed is not None and seed.text == "'😀😀', loud=True)"
    text = "名前 = 'é' + greet_user(名前, '😀😀', loud=True)\n"
    assert text[seed.offset :].startswith(seed.text)


# --- the workspace -------------------------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_workspace_files_seed_and_are_named_by_uri(tmp_path):
    write(tmp_path / "pkg" / "api.py", "def f(client):\n" + CALL)
    index = SeedIndex()
    stats = index.index_workspace([tmp_path])
    assert (stats.files, stats.skipped) == (1, 0)
    seed = index.lookup("x = client.fetch_user(")
    assert seed is not None and seed.source == (tmp_path / "pkg" / "api.py").as_uri()
    # an open document replaces the file of the same name
    index.update(seed.source, CALL.replace("user_id", "account_id"))
    assert index.lookup("x = client.fetch_user(").text.startswith("account_id")
    index.index_workspace([tmp_path])  # a rescan keeps the open document's text
    assert index.lookup("x = client.fetch_user(").text.startswith("account_id")


def test_workspace_skips_what_it_must_not_read(tmp_path):
    root = tmp_path / "ws"
    outside = write(tmp_path / "secret" / "keys.py", "token = load_secret_token(path, strict=True)\n")
    write(root / "ok.py", "a = parse_config(path, strict=True)\n")
    os.symlink(outside, root / "link.py")  # a file symlink out of the folder
    os.symlink(outside.parent, root / "linkdir")  # a directory symlink out of the folder
    for skipped in (
        ".git/x.py",
        ".hidden.py",
        "node_modules/m.js",
        "venv/lib.py",
        "build/gen.py",
        "x/__pycache__/c.py",
    ):
        write(root / skipped, "b = parse_config(path, strict=False)\n")
    write(root / "myenv" / "pyvenv.cfg", "home = /usr\n")
    write(root / "myenv" / "lib.py", "b = parse_config(path, strict=False)\n")
    write(root / "binary.py", b"c = parse_config(path, \x00\x01)\n")
    write(root / "latin1.py", "c = parse_config(path, 'é')\n".encode("latin-1"))
    write(root / "notes.txt", "c = parse_config(path, wrong_suffix)\n")
    index = SeedIndex()
    stats = index.index_workspace([root])
    assert stats.files == 1 and stats.skipped == 2  # binary and latin-1 were opened and refused
    assert index.lookup("load_secret_token(path, ") is None
    assert index.lookup("z = parse_config(path, ").text == "strict=True)"
    assert [n.rsplit("/", 1)[-1] for n in index._files] == ["ok.py"]


def test_a_symlink_inside_the_folder_is_read_once(tmp_path):
    write(tmp_path / "real.py", "a = parse_config(path, strict=True)\n")
    os.symlink(tmp_path / "real.py", tmp_path / "alias.py")
    index = SeedIndex()
    assert index.index_workspace([tmp_path]).files == 1
    assert index.lookup("z = parse_config(path, ").votes == 1


def test_a_folder_opened_through_a_symlink_names_files_as_the_editor_does(tmp_path):
    write(tmp_path / "real" / "a.py", "a = parse_config(path, strict=True)\n")
    os.symlink(tmp_path / "real", tmp_path / "link")
    index = SeedIndex()
    assert index.index_workspace([tmp_path / "link"]).files == 1
    assert index.lookup("z = parse_config(path, ").source == (tmp_path / "link" / "a.py").as_uri()


def test_workspace_bounds(tmp_path):
    line = "value_{} = compute(item, scale={})\n"
    size = len(line.format(0, 0))
    for i in range(10):
        write(tmp_path / f"f{i}.py", line.format(i, i))
    write(tmp_path / "big.py", "x = 1\n" * 100)
    index = SeedIndex()
    assert index.index_workspace([tmp_path], max_files=3).files == 3
    assert index.lookup("y = compute(item, ").text == "scale=0)"  # read in name order
    stats = index.index_workspace([tmp_path], max_bytes_per_file=100, max_total_bytes=size * 4)
    assert (stats.files, stats.bytes) == (4, size * 4)
    assert stats.skipped == 1  # big.py; reading stops when the budget is spent
    stats = index.index_workspace([tmp_path], max_total_bytes=size * 4 + 1)
    assert (stats.files, stats.skipped) == (4, 7)  # big.py, and six that no longer fit
    stats = index.index_workspace([tmp_path], suffixes=(".js",))
    assert stats.files == 0 and index.lookup("y = compute(item, ") is None  # a rescan replaces the old files
    assert index.index_workspace([tmp_path / "missing"]).files == 0


def test_workspace_reading_writes_nothing(tmp_path):
    write(tmp_path / "src" / "a.py", "a = parse_config(path, strict=True)\n")
    write(tmp_path / "b.py", "b = parse_config(path, strict=False)\n")
    paths = sorted(tmp_path.rglob("*"))
    before = {p: (p.stat().st_mtime_ns, p.stat().st_mode) for p in paths}
    for p in paths[::-1] + [tmp_path]:  # read-only all the way down: any write would raise
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        stats = SeedIndex().index_workspace([tmp_path])
    finally:
        for p in [tmp_path, *paths]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert stats.files == 2
    assert sorted(tmp_path.rglob("*")) == paths
    assert {p: (p.stat().st_mtime_ns, p.stat().st_mode) for p in paths} == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.py")  # opening it for reading would block without O_NONBLOCK
    write(tmp_path / "a.py", "a = parse_config(path, strict=True)\n")
    stats = SeedIndex().index_workspace([tmp_path])
    assert (stats.files, stats.skipped) == (1, 1)


@settings(deadline=None, max_examples=200)
@given(
    words=st.lists(st.sampled_from(["ab", "cd", "(", ")", ",", "\n", " ", "ef", "1"]), min_size=1, max_size=60),
    at=st.integers(min_value=0, max_value=10_000),
)
def test_a_seed_is_text_of_its_source_and_never_at_or_across_the_cursor(words, at):
    text = "".join(words)
    offset = at % (len(text) + 1)
    index = SeedIndex()
    index.update("a", text)
    seed = index.lookup(text[:offset], exclude_at=("a", offset), min_tokens=2, min_chars=2)
    if seed is None:
        return
    assert seed.text.strip() and "\n" not in seed.text
    assert text[seed.offset :].startswith(seed.text)
    assert seed.offset + len(seed.text) <= offset or seed.offset > offset


def test_an_oversized_document_is_not_indexed(monkeypatch):
    monkeypatch.setattr(seeds, "MAX_DOCUMENT_CHARS", 100)
    index = SeedIndex()
    index.update("a", CALL)
    index.update("a", CALL * 3)
    assert "a" not in index and index.lookup("x = client.fetch_user(") is None
