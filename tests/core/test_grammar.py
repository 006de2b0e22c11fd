"""The grammar: tracker transitions, malformed streams, the mask rule."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autogen_ext_memento.grammar import (
    BlockTracker,
    EventKind,
    MementoConfig,
    MementoTokenIds,
    SlotMap,
    TrackerState,
    build_visibility,
    evictions,
    format_block,
    kept_positions,
    parse_trace,
    visibility_to_additive,
)

IDS = MementoTokenIds(block_start=1, block_end=2, summary_start=3, summary_end=4)
BS, BE, SS, SE = 1, 2, 3, 4
W = 9  # an ordinary token


def completed(events: list) -> list:
    return [e for e in events if e.kind is EventKind.MEMENTO_COMPLETED]


def anomalies(tracker: BlockTracker) -> list[str]:
    return [a.detail.split(":")[0] for a in tracker.anomalies]


def test_well_formed_block_is_evicted_content_only() -> None:
    t = BlockTracker(IDS, MementoConfig())
    ev = t.feed_many([W, BS, W, W, BE, SS, W, SE, W])
    (done,) = completed(ev)
    assert done.evict == ((2, 4),)  # content between the delimiters, delimiters stay
    assert done.trigger == 7 and done.memento == (5, 8)
    assert t.state is TrackerState.OUTSIDE and not t.anomalies


def test_mask_delimiters_evicts_the_delimiters_too() -> None:
    t = BlockTracker(IDS, MementoConfig(mask_delimiters=True))
    (done,) = completed(t.feed_many([W, BS, W, W, BE, SS, W, SE]))
    assert done.evict == ((1, 5),)


def test_keep_last_n_blocks_delays_eviction() -> None:
    seq = [BS, W, BE, SS, W, SE] * 3
    t = BlockTracker(IDS, MementoConfig(keep_last_n_blocks=1))
    done = completed(t.feed_many(seq))
    assert [d.evict for d in done] == [(), ((1, 2),), ((7, 8),)]
    assert [d.evicted_blocks for d in done] == [(), (0,), (1,)]


def test_never_evict_with_minus_one() -> None:
    t = BlockTracker(IDS, MementoConfig(keep_last_n_blocks=-1))
    assert all(not d.evict for d in completed(t.feed_many([BS, W, BE, SS, W, SE] * 2)))


@pytest.mark.parametrize(
    ("seq", "kind", "evict"),
    [
        ([BE, W], "stray_block_end", []),
        ([SE, W], "stray_summary_end", []),
        ([BS, W, BS, W, BE, SS, SE], "nested_block_start", [(1, 4)]),
        ([BS, W, W, SS, W, SE], "summary_without_block_end", [(1, 3)]),
        ([SS, W, SE], "orphan_memento", []),
        ([BS, W, BE, BS, W, BE, SS, SE], "block_without_memento", [(4, 5)]),
        ([BS, W, BE, SS, W, BS, W], "unterminated_memento", [(1, 2)]),
        ([BS, W, BE, SS, SS, SE], "nested_summary_start", [(1, 2)]),
        ([BS, W, BE, SS, BE, SE], "stray_block_end", [(1, 2)]),
    ],
)
def test_malformed_streams_resolve_deterministically(seq: list[int], kind: str, evict: list[tuple[int, int]]) -> None:
    t = BlockTracker(IDS, MementoConfig())
    events = t.feed_many(seq)
    assert kind in anomalies(t)
    assert [s for d in completed(events) for s in d.evict] == evict


def test_unterminated_memento_triggers_before_the_new_block() -> None:
    t = BlockTracker(IDS, MementoConfig())
    (done,) = completed(t.feed_many([BS, W, BE, SS, W, BS]))
    assert done.trigger == 4  # the new block_start (position 5) already must not see the evicted block


def test_block_cap_requests_forced_end_and_reports_runaway() -> None:
    t = BlockTracker(IDS, MementoConfig(max_block_tokens=3))
    t.feed_many([BS, W, W])
    assert not t.must_close_block
    t.feed(W)
    assert t.must_close_block
    t.feed(W)  # fed past the cap (e.g. a prompt): accepted, reported once
    t.feed(W)
    assert anomalies(t) == ["runaway_block"]
    t.feed(BE)
    assert not t.must_close_block


def test_positions_must_increase() -> None:
    t = BlockTracker(IDS, MementoConfig())
    t.feed(W, 5)
    with pytest.raises(ValueError, match="strictly increase"):
        t.feed(W, 5)


def test_copy_is_independent() -> None:
    t = BlockTracker(IDS, MementoConfig())
    t.feed_many([BS, W])
    c = t.copy()
    c.feed_many([BE, SS, SE])
    assert t.state is TrackerState.IN_BLOCK and c.state is TrackerState.OUTSIDE
    assert t.blocks[0].end is None and c.blocks[0].end == 2


def test_visibility_matches_hand_built_mask() -> None:
    seq = [W, BS, W, W, BE, SS, W, SE, W, W]
    got = build_visibility(seq, IDS, MementoConfig())
    want = torch.ones(10, 10, dtype=torch.bool).tril()
    want[8:, 2:4] = False  # block content hidden after the summary_end at position 7
    assert torch.equal(got, want)
    assert torch.equal(build_visibility(seq, IDS, MementoConfig(), stage=1), torch.ones(10, 10).tril().bool())
    add = visibility_to_additive(got)
    assert add[9, 2] == torch.finfo(torch.float32).min and add[9, 1] == 0 and add[7, 2] == 0


def test_text_helpers_round_trip() -> None:
    text = "intro" + format_block("work one", "m1") + format_block("work two", "m2") + "answer"
    blocks, rest = parse_trace(text)
    assert [(b.work, b.memento) for b in blocks] == [("work one", "m1"), ("work two", "m2")]
    assert rest == "answer"


TOKENS = st.lists(st.sampled_from([BS, BE, SS, SE, W, W, W, W]), max_size=80)
CONFIGS = st.builds(
    MementoConfig,
    mask_delimiters=st.booleans(),
    keep_last_n_blocks=st.integers(-1, 2),
    max_block_tokens=st.none() | st.integers(1, 6),
)


@settings(max_examples=400, deadline=None)
@given(TOKENS, CONFIGS)
def test_any_stream_ends_in_a_defined_state(seq: list[int], cfg: MementoConfig) -> None:
    t = BlockTracker(IDS, cfg)
    events = t.feed_many(seq)  # never raises
    assert t.state in TrackerState
    spans = [s for d in completed(events) for s in d.evict]
    mementos = [d.memento for d in completed(events) if d.memento is not None]
    covered: set[int] = set()
    for s, e in spans:
        assert 0 <= s < e <= len(seq)
        cells = set(range(s, e))
        assert not cells & covered, "evicted spans overlap"
        covered |= cells
        for ms, me in mementos:
            assert not cells & set(range(ms, me)), "an evicted span overlaps a memento"
        # a span starts right after its block's opening delimiter, or at it when delimiters are masked
        assert seq[s] == BS if cfg.mask_delimiters else seq[s - 1] == BS
    if cfg.keep_last_n_blocks < 0:
        assert not spans
    # the mask and the kept positions are two views of the same evictions
    kept = kept_positions(seq, IDS, cfg)
    assert kept == [p for p in range(len(seq)) if p not in covered]
    vis = build_visibility(seq, IDS, cfg)
    for ev in evictions(seq, IDS, cfg):
        s, e = ev.span
        assert not vis[ev.trigger + 1 :, s:e].any()
        assert vis[ev.trigger, s:e].all()


@settings(max_examples=200, deadline=None)
@given(TOKENS, CONFIGS)
def test_slot_map_puts_each_kept_position_in_its_compacted_slot(seq: list[int], cfg: MementoConfig) -> None:
    slots = SlotMap(len(seq))
    cache = list(range(len(seq)))  # a cache that holds logical positions, cut as a backend cuts its KV
    for ev in evictions(seq, IDS, cfg):
        a, b = slots.evict(ev.span)
        assert cache[a:b] == list(range(*ev.span))
        del cache[a:b]
    assert slots.kept() == cache == kept_positions(seq, IDS, cfg) and slots.live == len(cache)
    assert all(slots.slot(p) == k for k, p in enumerate(cache))
