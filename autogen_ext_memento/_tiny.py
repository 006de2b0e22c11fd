"""Build tiny random Qwen3 models and byte-level BPE tokenizers locally (tests, offline fallbacks)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._tokens import REQUIRED_TOKENS
from .chat_format import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_RESPONSE_CLOSE, TOOL_RESPONSE_OPEN

EOS_TOKEN = "<|endoftext|>"

_DEFAULT_CORPUS = (
    "You are a helpful assistant. Use the tools to answer. The answer is 42.\n"
    '{"name": "lookup", "arguments": {"key": "alpha", "page": 3}}\n'
    f"{TOOL_CALL_OPEN}\n{TOOL_CALL_CLOSE}\n{TOOL_RESPONSE_OPEN}\n{TOOL_RESPONSE_CLOSE}\n# Tools\n<tools>\n</tools>\n"
    "Read the page and write down the values of alpha beta gamma delta. state: alpha=7 beta=? gamma=12.\n"
)


def build_tokenizer(
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    extra_special: Iterable[str] = (),
    words: Iterable[str] = (),
    cross_word: bool = False,
) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``corpus`` with the memento and ChatML tokens.

    Byte-level BPE round-trips any text exactly, which the chat format's tool-call parsing relies on. Each of
    ``words`` becomes one whole (non-special) token, matched before BPE: pass ``" alpha"`` to make the key, with
    its leading space, a single token wherever it occurs (a tiny model then copies one token, not several).
    ``cross_word=True`` lets merges span spaces and punctuation (SentencePiece-like), so fixed boilerplate of the
    corpus (a tool schema, JSON keys) becomes a few tokens and sequences get shorter.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS_TOKEN, *REQUIRED_TOKENS, *extra_special]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not cross_word)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        max_token_length=200 if cross_word else None,
    )
    tok.train_from_iterator(list(corpus) if corpus is not None else [_DEFAULT_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=list(REQUIRED_TOKENS) + list(extra_special),
    )
    whole = [AddedToken(w, normalized=False, special=False) for w in words]
    if whole:
        fast.add_tokens(whole)
    return fast


def build_tiny_qwen3(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 16,
    intermediate_size: int = 128,
    max_position_embeddings: int = 8192,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> Any:
    """A randomly initialised ``Qwen3ForCausalLM`` (float32, full attention everywhere)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        attn_implementation=attn_implementation,
    )
    model = Qwen3ForCausalLM(cfg)
    model.eval()
    return model


def save_tiny_model(out_dir: str | Path, corpus: Iterable[str] | None = None, seed: int = 0, **kwargs: Any) -> Path:
    """Build a tiny random model and tokenizer and save both to ``out_dir`` (loadable by ``from_pretrained``)."""
    out = Path(out_dir)
    tok = build_tokenizer(corpus)
    model = build_tiny_qwen3(len(tok), seed=seed, **kwargs)
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
