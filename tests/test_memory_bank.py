"""Upstream's memory selection rules, checked frame by frame on hand-worked cases."""
import numpy as np
import pytest

from etam_mobile.configs import get_config
from etam_mobile.contracts import Capacities
from etam_mobile.runtime.decisions import build_prompt, choose_mask, stability_score, use_multimask
from etam_mobile.runtime.memory_bank import (
    FrameMemory,
    ObjectBank,
    round_to_bf16,
    select_closest_cond_frames,
    select_memory,
)

CFG = get_config("efficienttam_ti_512x512")
BIG = Capacities(cond_frames=64)


def test_first_tracked_frame_sees_only_the_prompt_frame():
    sel = select_memory(1, [0], [], 100, CFG, BIG)
    assert sel.mem_frames == [0] and sel.mem_tpos == [6]
    assert sel.ptr_frames == [0]


def test_recent_frames_oldest_first_with_distance_encodings():
    sel = select_memory(10, [0], range(1, 10), 100, CFG, BIG)
    assert sel.mem_frames == [0, 4, 5, 6, 7, 8, 9]
    assert sel.mem_tpos == [6, 5, 4, 3, 2, 1, 0]
    # pointers: conditioning frame, then 1..15 frames back (here 9 down to 1)
    assert sel.ptr_frames == [0, 9, 8, 7, 6, 5, 4, 3, 2, 1]


def test_pointer_window_is_capped_by_video_length_and_16():
    sel = select_memory(40, [0], range(1, 40), 100, CFG, BIG)
    assert sel.ptr_frames == [0] + list(range(39, 24, -1))  # 15 past frames
    short = select_memory(7, [0], range(1, 7), 8, CFG, BIG)
    assert short.ptr_frames == [0, 6, 5, 4, 3, 2, 1]  # min(num_frames=8, 16) - 1 = 7 steps back


def test_future_conditioning_frame_is_memory_but_not_pointer():
    sel = select_memory(3, [0, 5], [1, 2], 10, CFG, BIG)
    assert sel.mem_frames == [0, 5, 1, 2]
    assert sel.mem_tpos == [6, 6, 1, 0]
    assert sel.ptr_frames == [0, 2, 1]


def test_closest_rule_past_capacity_and_unselected_frames_act_as_recent():
    selected, unselected = select_closest_cond_frames(10, [0, 3, 9, 12, 30], 3)
    assert selected == [9, 12, 3] and unselected == [0, 30]
    sel = select_memory(10, [0, 3, 9, 12, 30], [], 40, CFG, Capacities(cond_frames=2))
    assert sel.mem_frames[:2] == [9, 12]
    assert sel.mem_frames[2:] == []  # unselected 3 is 7 frames back: outside the recent window
    sel = select_memory(5, [0, 3, 9, 12], [4], 40, CFG, Capacities(cond_frames=2))
    assert sel.mem_frames == [3, 9, 0, 4] and sel.mem_tpos == [6, 6, 4, 0]


def test_prune_keeps_what_forward_tracking_can_reach():
    bank = ObjectBank(1)
    for t in range(40):
        bank.non_cond[t] = FrameMemory(np.zeros((1, 1)), np.zeros(2), 1.0)
        bank.prune(t, CFG)
    assert sorted(bank.non_cond) == list(range(25, 40))  # frame 40 reaches 25..39
    sel_full = select_memory(40, [], range(0, 40), 100, CFG, BIG)
    sel_pruned = select_memory(40, [], bank.non_cond.keys(), 100, CFG, BIG)
    assert sel_full == sel_pruned


def test_gather_packs_valid_slots_first():
    bank = ObjectBank(1)
    for t, v in [(0, 1.0), (3, 2.0)]:
        bank.cond[t] = FrameMemory(np.zeros((4, 4)), np.full(8, v), 1.0, np.full((2, 2, 2), v, np.float32))
    sel = select_memory(4, [0, 3], [], 10, CFG, BIG)
    mem, tpos, mv, ptrs, pv = bank.gather(sel, (5, 6), ((2, 2, 2), 8))
    assert mv.tolist() == [1, 1, 0, 0, 0] and pv.tolist() == [1, 1, 0, 0, 0, 0]
    assert mem[1, 0, 0, 0] == 2.0 and tpos.tolist()[:2] == [6, 6] and ptrs[1, 0] == 2.0
    with pytest.raises(RuntimeError, match="capacity"):
        bank.gather(sel, (1, 6), ((2, 2, 2), 8))


def test_bf16_rounding_is_nearest_even():
    import torch

    x = np.array([1.0, 1.00390625, 1.01171875, -3.14159, 65504.0, 1e-40, 3.0e38], np.float32)
    x = np.concatenate([x, np.random.default_rng(0).standard_normal(1000).astype(np.float32)])
    ref = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    assert np.array_equal(round_to_bf16(x), ref)  # bit-exact with torch's float32 -> bfloat16


def test_mask_choice_rules():
    masks = np.full((4, 8, 8), -5.0, np.float32)
    iou = np.array([0.9, 0.2, 0.7, 0.5], np.float32)
    c = choose_mask(masks, iou, 1, CFG)  # one click: multimask, best of 1..3
    assert (c.mask_index, c.ptr_index, c.multimask) == (2, 2, True)
    masks[0, :4] = 5.0  # a clean mask: stable -> token 0
    c = choose_mask(masks, iou, 2, CFG)
    assert (c.mask_index, c.ptr_index, c.multimask) == (0, 0, False) and c.stability == 1.0
    masks[0, 4, :4] = 0.01  # 4 of 36 px between +-delta -> unstable -> best multimask, pointer stays 0
    c = choose_mask(masks, iou, 2, CFG)
    assert (c.mask_index, c.ptr_index) == (2, 0) and c.stability == pytest.approx(32 / 36)
    assert use_multimask(0, CFG) and use_multimask(1, CFG) and not use_multimask(2, CFG)
    assert stability_score(np.full((3, 3), -9.0), 0.05) == 1.0


def test_prompt_building_orders_box_first_and_pads():
    pts, labs, n = build_prompt([[10, 20]], [0], [0, 0, 320, 240], (240, 320), 512, 6)
    assert n == 3 and labs.tolist() == [[2, 3, 0, -1, -2, -2]]
    np.testing.assert_allclose(pts[0, :3], [[0, 0], [512, 512], [16, 512 * 20 / 240]], rtol=1e-6)
    pts, labs, n = build_prompt([[1, 1]], [1], None, (240, 320), 512, None)
    assert labs.tolist() == [[1, -1]]
    # Tracking without clicks: upstream feeds a dummy (0, 0) point labelled -1 plus its pad.
    pts, labs, n = build_prompt(None, None, None, (240, 320), 512, 4)
    assert n == 0 and labs.tolist() == [[-1, -1, -2, -2]] and not pts.any()
    with pytest.raises(ValueError, match="at most 1"):
        build_prompt([[1, 1], [2, 2]], [1, 1], None, (240, 320), 512, 2)
