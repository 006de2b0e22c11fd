"""Backend hardening: constructor arguments go through the Config, model paths fail in one clear line, no warnings,
and the shipped model is stored in configs by a portable name."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend
from autogen_ext_memento.assets import tiny_model_path
from autogen_ext_memento.backends import MementoBackend, SamplingParams
from autogen_ext_memento.backends._base import (
    available_torch_devices,
    check_torch_device,
    portable_model_name,
    resolve_model_path,
)


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    return TransformersBackend("tiny")


def one_line_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"device": "banana"}, r"device 'banana' is not a torch device; this torch \(.*\) can use: cpu"),
        ({"max_sessions": 0}, "max_sessions"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"num_threads": 0}, "num_threads"),
        ({"memento": {"keep_last_n_blocks": -5}}, "memento.keep_last_n_blocks"),
        ({"memento": {"keep_last_n_blocks": 0, "bogus": 1}}, "memento.bogus"),
        ({"dtype": "float8"}, "dtype"),
    ],
)
def test_constructor_goes_through_the_config(tiny_tokenizer: Any, kwargs: dict[str, Any], match: str) -> None:
    # A missing model path would fail too: these must fail on the arguments first, before anything is loaded.
    with pytest.raises(ValueError, match=f"invalid TransformersBackend arguments: .*{match}") as info:
        TransformersBackend("/no/such/model", **kwargs)
    one_line_error(info)


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
def test_unavailable_cuda_device_names_what_torch_has() -> None:
    with pytest.raises(ValueError, match=r"device 'cuda:7' is not available: this torch .* can use: cpu") as info:
        TransformersBackend("tiny", device="cuda:7")
    one_line_error(info)
    assert "cpu" in available_torch_devices() and check_torch_device("cpu") == "cpu"


def test_memento_as_a_dict_is_validated_into_a_config() -> None:
    backend = TransformersBackend("tiny", memento={"keep_last_n_blocks": 2})
    assert backend.memento_config.keep_last_n_blocks == 2


def test_missing_model_path_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as info:
        TransformersBackend(str(missing))
    assert one_line_error(info) == (
        f"model path {str(missing)!r} does not exist: expected a local directory with config.json "
        "or a hub name (org/name)"
    )


def test_directory_that_is_not_a_model_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(
        ValueError,
        match=f"model path {str(tmp_path)!r} is not a model directory: expected "
        r"config.json and tokenizer files \(tokenizer.json",
    ) as info:
        TransformersBackend(str(tmp_path))
    one_line_error(info)


def test_hub_names_pass_through_unchanged(tiny_model_dir: Path) -> None:
    assert resolve_model_path("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
    for not_a_hub_name in ("missing_dir", "./a/b", "a/b/c", "../x/y"):
        with pytest.raises(FileNotFoundError):
            resolve_model_path(not_a_hub_name)


def test_shipped_model_is_stored_by_a_portable_name(tiny: TransformersBackend) -> None:
    assert tiny.dump_component().config["model"] == "tiny"
    by_path = TransformersBackend(str(tiny_model_path()))
    assert by_path.dump_component().config["model"] == "tiny"
    assert portable_model_name("tiny-memento") == "tiny" and portable_model_name("org/name") == "org/name"
    assert resolve_model_path("tiny-memento") == str(tiny_model_path())
    client = MementoChatCompletionClient(by_path)
    comp = json.loads(client.dump_component().model_dump_json())
    assert str(tiny_model_path()) not in json.dumps(comp)
    again = MementoBackend.load_component(comp["config"]["backend"])
    assert isinstance(again, TransformersBackend) and again.dump_component().config["model"] == "tiny"


def test_tiny_full_resolves_when_shipped() -> None:
    from autogen_ext_memento import assets

    fn = getattr(assets, "tiny_full_model_path", None)
    if fn is None:
        pytest.skip("this build ships no tiny_full model")
    try:
        path = fn()
    except FileNotFoundError:
        pytest.skip("tiny_full weights are not installed")
    assert resolve_model_path("tiny-full") == str(path) and portable_model_name(str(path)) == "tiny-full"


def test_generate_emits_no_deprecation_warnings(tiny: TransformersBackend) -> None:
    """The demo path used to print transformers' `past_key_values is deprecated` FutureWarning on every forward."""
    ids = tiny.tokenizer.encode("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = tiny.generate("w", ids, SamplingParams(max_new_tokens=3))
    assert res.token_ids
