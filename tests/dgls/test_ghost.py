"""Typed-through cache: typing the first characters of the ghost text answers from its rest."""

from dgls.ghost import Ghost, GhostCache
from dgls.text import Edit

TEXT = "def f(a):\n    return \n"
AT = TEXT.index("return ") + len("return ")


def test_typed_prefix_of_the_ghost_gives_the_rest():
    cache = GhostCache()
    cache.remember("u", Ghost(TEXT, Edit(AT, AT, "a + 1")))
    typed = TEXT[:AT] + "a " + TEXT[AT:]
    rest = cache.lookup("u", typed, AT + 2)
    assert rest == Ghost(typed, Edit(AT + 2, AT + 2, "+ 1"))
    typed2 = typed[: AT + 2] + "+" + typed[AT + 2 :]
    assert cache.lookup("u", typed2, AT + 3).edit.new_text == " 1"  # and again from the remembered rest


def test_replaced_closers_move_with_the_cursor():
    text = "print()\n"
    cache = GhostCache()
    cache.remember("u", Ghost(text, Edit(6, 7, '"hi")')))
    typed = 'print("h)\n'
    assert cache.lookup("u", typed, 8) == Ghost(typed, Edit(8, 9, 'i")'))


def test_misses():
    cache = GhostCache()
    cache.remember("u", Ghost(TEXT, Edit(AT, AT, "a + 1")))
    other = TEXT[:AT] + "b" + TEXT[AT:]
    assert cache.lookup("u", other, AT + 1) is None  # typed something else
    assert cache.lookup("v", TEXT, AT) is None  # other document
    assert cache.lookup("u", TEXT, AT) is None  # nothing typed yet
    full = TEXT[:AT] + "a + 1" + TEXT[AT:]
    assert cache.lookup("u", full, AT + 5) is None  # typed all of it
    elsewhere = "#\n" + TEXT[:AT] + "a" + TEXT[AT:]
    assert cache.lookup("u", elsewhere, AT + 3) is None  # edited before it too
    cache.forget("u")
    assert cache.lookup("u", TEXT[:AT] + "a" + TEXT[AT:], AT + 1) is None
