"""Environment configuration: parsing, validation messages, documentation coverage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from masterx_runtime.config import REGISTRY, ConfigError, _import_all_settings, env, load, settings


@pytest.fixture(autouse=True)
def _registry_untouched() -> Iterator[None]:
    """Settings declared by these tests must not leak into the shared registry."""
    yield
    for name in [n for n, spec in REGISTRY.items() if spec.section == "test"]:
        del REGISTRY[name]


class Example:
    port: int = env("TEST_EXAMPLE_PORT", 8080, "A port.", minimum=1, maximum=65535)
    ratio: float = env("TEST_EXAMPLE_RATIO", 0.5, "A ratio.", minimum=0, maximum=1)
    enabled: bool = env("TEST_EXAMPLE_ENABLED", False, "A flag.")
    mode: str = env("TEST_EXAMPLE_MODE", "a", "A mode.", choices=("a", "b"))
    names: tuple[str, ...] = env("TEST_EXAMPLE_NAMES", (), "A list.")
    key: str = env("TEST_EXAMPLE_KEY", "", "A secret.", secret=True)


def _example() -> type[Example]:
    return settings("test")(Example)  # type: ignore[no-any-return]


def test_defaults_and_overrides() -> None:
    example = _example()
    assert load(example, {}) == example()
    cfg = load(example, {"TEST_EXAMPLE_PORT": "9000", "TEST_EXAMPLE_ENABLED": "yes", "TEST_EXAMPLE_NAMES": "x, y,,z"})
    assert (cfg.port, cfg.enabled, cfg.names) == (9000, True, ("x", "y", "z"))
    assert load(example, {}, port=1234).port == 1234


def test_all_problems_reported_at_once_and_secrets_hidden() -> None:
    with pytest.raises(ConfigError) as err:
        load(
            _example(),
            {
                "TEST_EXAMPLE_PORT": "0",
                "TEST_EXAMPLE_RATIO": "lots",
                "TEST_EXAMPLE_ENABLED": "maybe",
                "TEST_EXAMPLE_MODE": "c",
            },
        )
    text = str(err.value)
    assert "TEST_EXAMPLE_PORT='0': must be >= 1" in text
    assert "TEST_EXAMPLE_RATIO='lots': expected a number" in text
    assert "TEST_EXAMPLE_ENABLED='maybe': expected a boolean" in text
    assert "TEST_EXAMPLE_MODE='c': must be one of a, b" in text
    assert len(err.value.problems) == 4


def test_secret_values_never_appear_in_errors() -> None:
    @settings("test")
    class WithSecret:
        timeout: int = env("TEST_SECRET_TIMEOUT", 1, "x", secret=True)

    with pytest.raises(ConfigError) as err:
        load(WithSecret, {"TEST_SECRET_TIMEOUT": "sk-live-123"})
    assert "sk-live-123" not in str(err.value)
    assert "<hidden>" in str(err.value)


def test_every_variable_the_code_reads_is_in_the_readme_table() -> None:
    _import_all_settings()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in REGISTRY if not name.startswith("TEST_") and f"`{name}`" not in readme]
    assert not missing, f"document these in README.md (masterx env prints the table): {missing}"
