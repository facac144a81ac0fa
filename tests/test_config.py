"""Tests for sparseseg.config: durations, triples, validation and device defaults."""

import json

import pytest

from sparseseg.cli.options import parse_duration, parse_triple
from sparseseg.config import DEVICE_DEFAULTS, Config
from sparseseg.errors import InputError


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("90S", 90.0),
        (" 45 ", 45.0),
        ("0", 0.0),
        ("5m", 300.0),
        ("2.5m", 150.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("0.5h", 1800.0),
        (120, 120.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_none():
    assert parse_duration(None) is None


@pytest.mark.parametrize("text", ["", "  ", "abc", "m", "s", "h", "5x", "-5", "5 m", "1.2.3", "m5", "30m1h", "1,5m"])
def test_parse_duration_rejects(text):
    with pytest.raises(InputError, match="time_budget"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        ("50,4,4", float, (50.0, 4.0, 4.0)),
        ("0.5,0.25,0.25", float, (0.5, 0.25, 0.25)),
        ("8,16,16", int, (8, 16, 16)),
        ("8x16x16", int, (8, 16, 16)),
    ],
)
def test_parse_triple(text, kind, expected):
    values = parse_triple(text, "patch", kind)
    assert values == expected
    assert all(type(v) is kind for v in values)


def test_parse_triple_none():
    assert parse_triple(None, "spacing") is None


@pytest.mark.parametrize(
    "text, kind",
    [
        ("1,2", float),
        ("1,2,3,4", float),
        ("a,b,c", float),
        ("", float),
        ("0,1,1", float),
        ("-1,2,2", float),
        ("1.5,2,2", int),
        ("8,16,", int),
    ],
)
def test_parse_triple_rejects(text, kind):
    with pytest.raises(InputError, match="patch="):
        parse_triple(text, "patch", kind)


@pytest.mark.parametrize(
    "field, value",
    [
        ("base", 0),
        ("depth", -1),
        ("depth", 7),
        ("patch", (8, 16)),
        ("patch", (0, 16, 16)),
        ("batch_size", 0),
        ("iterations", -1),
        ("time_budget", -1.0),
        ("lr", 0.0),
        ("class_power", -0.5),
        ("dice", -1.0),
        ("overlap", 1.0),
        ("overlap", -0.1),
        ("wide_overlap", 1.0),
        ("wide_overlap", -0.1),
        ("spacing", (1.0, 1.0)),
        ("spacing", (0.0, 1.0, 1.0)),
        ("device", "gpu"),
        ("unlabeled", -1),
        ("unlabeled", 65536),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(InputError, match=field):
        Config(**{field: value})


def test_defaults_are_valid():
    config = Config()
    assert config.base is None and config.iterations is None and config.device == "auto"


@pytest.mark.parametrize("cuda", [False, True])
def test_resolved_fills_device_defaults(cuda):
    resolved = Config().resolved(cuda)
    for name, values in DEVICE_DEFAULTS.items():
        assert getattr(resolved, name) == values[int(cuda)]


def test_cpu_defaults_are_lighter_than_cuda():
    cpu, cuda = Config().resolved(False), Config().resolved(True)
    assert cpu.base < cuda.base and cpu.batch_size <= cuda.batch_size
    # on a CPU the time budget ends a run: the step cap lies beyond what the budget allows
    assert cpu.iterations > cuda.iterations


def test_resolved_keeps_given_values():
    config = Config(base=8, iterations=5, time_budget=1.5, batch_size=3)
    for cuda in (False, True):
        resolved = config.resolved(cuda)
        assert (resolved.base, resolved.iterations, resolved.time_budget, resolved.batch_size) == (8, 5, 1.5, 3)
    assert Config(time_budget=0.0).resolved(False).time_budget == 0.0  # 0 is a value, not "unset"


def test_augmentation_is_off_by_default_on_both_devices():
    # measured: short runs learn more from the plain planes (docs/benchmarks.md)
    assert not Config().resolved(False).augment and not Config().resolved(True).augment


def test_dict_round_trip():
    config = Config(base=8, patch=(8, 16, 16), spacing=(2.0, 0.5, 0.5), seed=3, tta=True, lr=1e-3, unlabeled=0)
    assert Config.from_dict(config.to_dict()) == config
    # through JSON, where tuples become lists
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_dict_round_trips_and_refuses_unknown_or_missing_fields():
    config = Config(base=4, patch=(8, 16, 16), spacing=(2.0, 1.0, 1.0))
    assert Config.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="from_the_future"):
        Config.from_dict({**config.to_dict(), "from_the_future": 1})
    with pytest.raises(InputError, match="'lr'"):
        Config.from_dict({k: v for k, v in config.to_dict().items() if k != "lr"})
    with pytest.raises(InputError, match="base=0"):
        Config.from_dict({**config.to_dict(), "base": 0})


def test_a_config_saved_before_wide_overlap_keeps_the_overlap_it_was_run_with():
    saved = {k: v for k, v in Config(wide_overlap=0.25).to_dict().items() if k != "wide_overlap"}
    assert Config.from_dict(saved).wide_overlap == 0.5  # what its windows did then, along every axis
