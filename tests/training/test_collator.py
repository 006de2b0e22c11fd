"""The memento collator's masks, padding and positions against hand-built expectations."""

from __future__ import annotations

import pytest
import torch

from autogen_ext_memento.grammar import MementoConfig, MementoTokenIds
from autogen_ext_memento.training import IGNORE_INDEX, MASK_KEY, MementoCollator

IDS = MementoTokenIds(block_start=1, block_end=2, summary_start=3, summary_end=4)
#        pos: 0  1  2  3  4  5  6  7  8  9 10 11 12 13
SEQ = [9, 1, 7, 7, 2, 3, 8, 4, 1, 7, 2, 3, 8, 4]
# block 0 content = positions 2,3 (evicted after its memento ends at 7); block 1 content = 9 (after 13)
MIN = torch.finfo(torch.float32).min


def _expected_stage2(n: int, mask_delimiters: bool = False) -> torch.Tensor:
    vis = torch.ones(n, n, dtype=torch.bool).tril()
    span0 = (1, 5) if mask_delimiters else (2, 4)
    vis[8:, span0[0] : span0[1]] = False  # everything after <|summary_end|> at 7 loses block 0
    return vis


def test_stage1_is_causal_and_stage2_follows_the_memento_rule() -> None:
    n = len(SEQ)
    s1 = MementoCollator(IDS, stage=1)([{"input_ids": SEQ, "labels": SEQ}])
    assert torch.equal(s1[MASK_KEY][0, 0] == 0, torch.ones(n, n, dtype=torch.bool).tril())
    s2 = MementoCollator(IDS, stage=2)([{"input_ids": SEQ, "labels": SEQ}])
    vis = s2[MASK_KEY][0, 0] == 0
    assert torch.equal(vis, _expected_stage2(n))
    # the memento's own tokens (5..7) still see the block; the next block start (8) does not
    assert vis[7, 2] and vis[7, 3] and not vis[8, 2] and not vis[13, 3]
    # delimiters stay visible with mask_delimiters=False, the memento stays visible for ever
    assert vis[13, 1] and vis[13, 4] and vis[13, 5] and vis[13, 6]
    # values are exactly 0 / finfo.min (additive float mask, never -inf)
    m = s2[MASK_KEY]
    assert m.dtype == torch.float32 and set(m.unique().tolist()) == {0.0, MIN}
    md = MementoCollator(IDS, stage=2, config=MementoConfig(mask_delimiters=True))([{"input_ids": SEQ}])
    assert torch.equal(md[MASK_KEY][0, 0] == 0, _expected_stage2(n, mask_delimiters=True))


def test_dynamic_padding_labels_positions() -> None:
    short = [9, 1, 7, 2, 3, 8, 4]
    lab_short = [IGNORE_INDEX, 1, 7, IGNORE_INDEX, IGNORE_INDEX, 8, 4]
    batch = MementoCollator(IDS, stage=2, pad_token_id=0, pad_to_multiple_of=8)(
        [{"input_ids": SEQ, "labels": SEQ}, {"input_ids": short, "labels": lab_short}]
    )
    assert batch["input_ids"].shape == (2, 16)  # 14 rounded up to a multiple of 8
    assert batch["input_ids"][1, :7].tolist() == short and batch["input_ids"][1, 7:].eq(0).all()
    assert batch["labels"][1, :7].tolist() == lab_short and batch["labels"][1, 7:].eq(IGNORE_INDEX).all()
    assert batch["labels"][0, 14:].eq(IGNORE_INDEX).all()
    assert batch["attention_mask"].sum(1).tolist() == [14, 7]
    assert batch["position_ids"][1].tolist() == list(range(16))
    vis = batch[MASK_KEY][1, 0] == 0
    # real tokens never see padding; padded rows see only themselves (no empty softmax row)
    assert not vis[:7, 7:].any()
    assert torch.equal(vis[7:, :], torch.eye(16, dtype=torch.bool)[7:, :])
    assert vis.any(1).all()
    # the short sample's memento rule: block content (2) hidden after its memento's end (6); nothing later here
    assert vis[6, 2] and vis[5, 2]
    assert torch.equal(vis[:7, :7], torch.ones(7, 7, dtype=torch.bool).tril())


def test_collated_mask_drives_a_model_like_eviction(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    """A padded batch with the 4-D mask gives each sample the logits it gets alone (padding is inert)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    ids = MementoTokenIds.from_tokenizer(tok)
    text_a = "hello <|block_start|> page one <|block_end|><|summary_start|> m <|summary_end|> answer 42"
    text_b = "short <|block_start|> x <|block_end|>"
    a = tok.encode(text_a, add_special_tokens=False)
    b = tok.encode(text_b, add_special_tokens=False)
    col = MementoCollator(ids, stage=2, pad_token_id=int(tok.pad_token_id))
    both = col([{"input_ids": a}, {"input_ids": b}])
    alone = col([{"input_ids": b}])
    with torch.no_grad():
        lb = model(input_ids=both["input_ids"], position_ids=both["position_ids"], attention_mask=both[MASK_KEY]).logits
        lo = model(
            input_ids=alone["input_ids"], position_ids=alone["position_ids"], attention_mask=alone[MASK_KEY]
        ).logits
    assert torch.allclose(lb[1, : len(b)], lo[0], atol=1e-5)
    assert torch.isfinite(lb).all()


def test_position_gaps_follow_each_block_and_leave_the_mask_alone() -> None:
    feats = [{"input_ids": SEQ, "labels": SEQ}]
    plain = MementoCollator(IDS, stage=2)(feats)
    gapped = [MementoCollator(IDS, stage=s, max_position_gap=50, seed=3)(feats) for s in (1, 2)]
    for batch, base in zip(gapped, (MementoCollator(IDS, stage=1)(feats), plain), strict=True):
        assert torch.equal(batch[MASK_KEY], base[MASK_KEY])  # only positions change
    pos = gapped[1]["position_ids"][0].tolist()
    steps = [b - a for a, b in zip(pos, pos[1:], strict=False)]
    # the gaps sit where each evicted block's content ends (positions 4 and 10), nowhere else
    assert all(d == 1 for i, d in enumerate(steps) if i + 1 not in (4, 10))
    assert all(1 <= steps[i - 1] <= 51 for i in (4, 10)) and sum(steps) > len(steps)
    # the same seed gives the same gaps, for either mask; another seed (almost surely) other gaps
    assert gapped[0]["position_ids"].tolist() == gapped[1]["position_ids"].tolist()
    other = MementoCollator(IDS, stage=2, max_position_gap=50, seed=4)(feats)["position_ids"]
    assert other.tolist() != gapped[1]["position_ids"].tolist()
    assert plain["position_ids"][0].tolist() == list(range(len(SEQ)))
    with pytest.raises(ValueError, match="max_position_gap"):
        MementoCollator(IDS, max_position_gap=-1)


def test_causal_share_trains_some_stage2_samples_causally() -> None:
    feats = [{"input_ids": SEQ, "labels": SEQ}] * 64
    causal = torch.ones(len(SEQ), len(SEQ), dtype=torch.bool).tril()
    memento = _expected_stage2(len(SEQ))
    batch = MementoCollator(IDS, stage=2, causal_share=0.5, seed=1)(feats)
    kinds = []
    for i in range(len(feats)):
        vis = batch[MASK_KEY][i, 0] == 0
        assert torch.equal(vis, causal) or torch.equal(vis, memento)
        kinds.append(torch.equal(vis, causal))
    assert 16 <= sum(kinds) <= 48  # about half, drawn per sample
    again = MementoCollator(IDS, stage=2, causal_share=0.5, seed=1)(feats)
    assert torch.equal(again[MASK_KEY], batch[MASK_KEY])  # seeded
    none = MementoCollator(IDS, stage=2, causal_share=0.0)(feats[:4])
    assert all(torch.equal(none[MASK_KEY][i, 0] == 0, memento) for i in range(4))
    stage1 = MementoCollator(IDS, stage=1, causal_share=1.0)(feats[:2])  # stage 1 is causal anyway
    assert torch.equal(stage1[MASK_KEY][0, 0] == 0, causal)
    with pytest.raises(ValueError, match="causal_share"):
        MementoCollator(IDS, causal_share=1.5)
