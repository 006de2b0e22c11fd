"""The vLLM plugin's engine-wide options: parsed from ``--additional-config``, bad values refused in one line."""

from __future__ import annotations

from typing import Any

import pytest
from autogen_memento_vllm import PluginOptions


def test_options_are_parsed_from_additional_config() -> None:
    opts = PluginOptions.from_additional_config(
        {"memento": {"keep_last_n_blocks": 1, "swap_space_gib": 0, "admission_horizon": 8, "max_sessions": 3}}
    )
    assert opts.swap_space_gib == 0 and opts.admission_horizon == 8 and opts.max_sessions == 3
    assert opts.memento.keep_last_n_blocks == 1
    assert PluginOptions.from_additional_config({}).swap_space_gib == 4.0


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("swap_space_gib", -1, "swap_space_gib: expected a non-negative number of GiB, got -1"),
        ("swap_space_gib", "4", "swap_space_gib: expected a non-negative number of GiB, got '4'"),
        ("swap_space_gib", float("nan"), "swap_space_gib: expected a non-negative number of GiB"),
        ("session_ttl_s", 0, "session_ttl_s: expected a positive number of seconds, got 0"),
        ("max_session_fraction", 1.5, "max_session_fraction: expected a fraction in (0, 1], got 1.5"),
        ("max_sessions", 2.5, "max_sessions: expected a non-negative integer, got 2.5"),
        ("admission_margin", True, "admission_margin: expected a non-negative fraction, got True"),
        ("max_session_blocks", -3, "max_session_blocks: expected a non-negative integer, got -3"),
    ],
)
def test_a_bad_option_is_refused_in_one_line(option: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError) as err:
        PluginOptions.from_additional_config({"memento": {option: value}})
    text = str(err.value)
    assert message in text and "\n" not in text
