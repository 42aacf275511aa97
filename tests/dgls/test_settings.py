"""Settings: camelCase JSON -> the typed tree, unknown keys ignored, invalid values reported and defaulted."""

from __future__ import annotations

from dgls.context import ContextBudget
from dgls.settings import LanguageSettings, Settings, parse_settings


def test_defaults_for_nothing():
    assert parse_settings(None) == (Settings(), [])
    assert parse_settings({}) == (Settings(), [])
    assert parse_settings({"dgls": None}) == (Settings(), [])


def test_raw_dict_with_unknown_keys_and_nesting():
    raw = {
        "dgls": {
            "model": "/models/dg",
            "device": "cpu",
            "dtype": "auto",
            "experts": "fp8",
            "maxCanvas": 32,
            "steps": 6,
            "entropyBound": 0.5,
            "debounceMs": 20,
            "contextBudget": {"prefixTokens": 300, "suffixTokens": 40, "mystery": 1},
            "candidates": 2,
            "languages": {"enable": ["python", "go"], "disable": ["go"]},
            "holeMarkers": ["...", "pass"],
            "completionInStrings": True,
            "someFutureKey": {"x": 1},
        }
    }
    settings, problems = parse_settings(raw)
    assert problems == []
    assert settings == Settings(
        model="/models/dg",
        device="cpu",
        dtype=None,
        experts="fp8",
        max_canvas=32,
        steps=6,
        entropy_bound=0.5,
        debounce_ms=20,
        context_budget=ContextBudget(prefix_tokens=300, suffix_tokens=40),
        candidates=2,
        languages=LanguageSettings(enable=("python", "go"), disable=("go",)),
        hole_markers=("...", "pass"),
        completion_in_strings=True,
    )
    assert settings.sampler_overrides() == {"max_steps": 6, "entropy_bound": 0.5}
    assert settings.languages.enabled("python") and not settings.languages.enabled("go")
    assert not settings.languages.enabled("rust")


def test_top_level_keys_work_too():
    settings, problems = parse_settings({"steps": 3, "candidates": 5})
    assert problems == [] and settings.steps == 3 and settings.candidates == 5


def test_invalid_values_fall_back_with_one_message_each():
    raw = {
        "steps": 0,
        "maxCanvas": "big",
        "debounceMs": True,
        "candidates": 2,
        "languages": {"enable": [1]},
        "contextBudget": 5,
        "completionInStrings": "yes",
        "entropyBound": -1,
        "experts": "int4",
    }
    settings, problems = parse_settings(raw)
    assert settings.candidates == 2  # the valid key still applies
    assert settings.steps is None and settings.max_canvas == 64 and settings.debounce_ms == 75
    assert settings.languages == LanguageSettings() and settings.context_budget == ContextBudget()
    assert not settings.completion_in_strings and settings.entropy_bound is None
    assert len(problems) == 8
    by_key = {p.split(":")[0]: p for p in problems}
    assert by_key["steps"] == "steps: expected an integer >= 1 and <= 1024, got int 0; keeping null (auto)"
    assert "got a string 'big'" in by_key["maxCanvas"] and "keeping 64" in by_key["maxCanvas"]
    assert "expected an integer" in by_key["debounceMs"] and "got true" in by_key["debounceMs"]
    assert "languages.enable" in by_key and "contextBudget" in by_key
    assert "expected true or false" in by_key["completionInStrings"]
    assert by_key["experts"] == "experts: expected one of 'auto', 'fp8', got a string 'int4'; keeping 'auto'"
    assert settings.experts == "auto"


def test_overlay_keeps_what_is_not_sent():
    first, _ = parse_settings({"dgls": {"steps": 4, "debounceMs": 10}})
    second, problems = parse_settings({"dgls": {"debounceMs": 30}}, base=first)
    assert problems == [] and second.steps == 4 and second.debounce_ms == 30
    assert parse_settings({}, base=first) == (first, [])


def test_not_an_object():
    settings, problems = parse_settings(["steps", 3])
    assert settings == Settings() and problems == [
        "settings: expected an object, got a list ['steps', 3]; keeping the previous settings"
    ]
    _, problems = parse_settings({"dgls": 7})
    assert problems and problems[0].startswith("dgls: expected an object, got int 7")


def test_round_trip_through_json():
    settings = Settings(steps=5, hole_markers=("...", "TODO"))
    again, problems = parse_settings(settings.to_json())
    assert problems == [] and again == settings
    assert settings.to_json()["contextBudget"] == {"prefixTokens": 1024, "suffixTokens": 256}


def test_empty_arrays_from_lua_clients_count_as_empty_objects():
    """Neovim encodes an empty Lua table as ``[]``: no problem reported, nothing changed."""
    base, _ = parse_settings({"model": "x", "steps": 3})
    for raw in ([], {"dgls": []}, {"contextBudget": [], "languages": []}):
        settings, problems = parse_settings(raw, base)
        assert problems == [] and settings == base, raw
    # a non-empty array is still a mistake, reported once
    _, problems = parse_settings({"contextBudget": [1]}, base)
    assert len(problems) == 1 and "expected an object" in problems[0]


def test_languages_default_to_the_models_own():
    default = Settings().languages
    assert default.enabled("python", ("python",)) and not default.enabled("go", ("python",))
    assert default.untrained("go", ("python",)) and not default.untrained("python", ("python",))
    assert default.enabled("go", None) and not default.untrained("go", None)  # the model does not say: all on
    settings, problems = parse_settings({"languages": {"enable": ["go"], "disable": ["python"]}})
    assert not problems
    assert settings.languages.enabled("go", ("python",)) and not settings.languages.enabled("python", ("python",))
    assert not settings.languages.untrained("python", ("python",))  # switched off by the user: nothing to say
    everything, _ = parse_settings({"languages": {"enable": ["*"]}})
    assert everything.languages.enabled("cobol", ("python",))
