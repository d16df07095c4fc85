"""mAP@100 and rank-1 on hand-computed cases (iQIYI-VID evaluation semantics)."""

import pytest

from vidpipe.eval.metrics import average_precision, clip_accuracy, evaluate_retrieval, mean_average_precision


def test_ap_hand_computed():
    # hits at positions 1, 3 and 6 of 3 positives: (1/1 + 2/3 + 3/6) / 3
    ranked = ["a", "x", "b", "y", "z", "c"]
    assert average_precision(ranked, {"a", "b", "c"}) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)


def test_ap_divides_by_ground_truth_count_not_hits():
    # 2 of 4 positives retrieved, at ranks 1 and 2: (1 + 1) / 4
    assert average_precision(["a", "b", "x"], {"a", "b", "c", "d"}) == pytest.approx(0.5)


def test_only_top_100_count():
    ranked = [f"n{i}" for i in range(100)] + ["a"]
    assert average_precision(ranked, {"a"}) == 0.0
    assert average_precision(ranked[1:], {"a"}) == pytest.approx(1 / 100)


def test_duplicates_dropped_before_ranking():
    # the official script keeps the first occurrence of a repeated clip
    assert average_precision(["x", "x", "a"], {"a"}) == pytest.approx(1 / 2)


def test_map_missing_identity_scores_zero_and_extra_ids_ignored():
    gt = {"1": ["a", "b"], "2": ["c"], "3": ["d"]}
    sub = {"1": ["a", "z", "b"], "2": ["z", "c"], "99": ["d"]}
    # id1: (1 + 2/3)/2 ; id2: (1/2)/1 ; id3 missing: 0 → mean over 3 gt identities
    expected = ((1 + 2 / 3) / 2 + 0.5 + 0.0) / 3
    assert mean_average_precision(sub, gt) == pytest.approx(expected)
    scores = evaluate_retrieval(sub, gt)
    assert scores.rank1 == pytest.approx(1 / 3)  # only id1 has a correct first result
    assert scores.per_identity["3"] == 0.0 and scores.num_identities == 3


def test_perfect_submission_scores_one():
    gt = {"1": ["a", "b"], "2": ["c"]}
    assert mean_average_precision({"1": ["b", "a"], "2": ["c"]}, gt) == pytest.approx(1.0)


def test_clip_accuracy():
    assert clip_accuracy({"a": "1", "b": "2"}, {"a": "1", "b": "1", "c": "2"}) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        clip_accuracy({}, {})


def test_ap_divides_by_all_ground_truth_clips_even_beyond_100():
    # 150 positives, the top 100 all correct: the official AP is 100/150, not 1 (min(m, 100) would say 1)
    positives = [f"p{i}" for i in range(150)]
    assert average_precision(positives[:100], positives) == pytest.approx(100 / 150)
    assert mean_average_precision({"1": positives}, {"1": positives}) == pytest.approx(100 / 150)


def test_rank_clips_and_scores_map():
    import numpy as np

    from vidpipe.eval.metrics import rank_clips, scores_map

    scores = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.0, 0.6, 0.4], [0.2, 0.1, 0.7]])
    clips, classes = ["a", "b", "c", "d"], ["0", "x", "y"]
    lists = rank_clips(scores, clips, classes, top_k=3)
    assert list(lists) == ["x", "y"]  # no list for the noise class
    assert [c for c, _ in lists["x"]] == ["a", "c", "b"] and lists["y"][0] == ("d", 0.7)
    # x: a, c are x → AP 1; y: d is y → AP 1; b is noise
    assert scores_map(scores, clips, classes, ["x", "0", "x", "y"]) == pytest.approx(1.0)
    # c labelled y instead: y list d, c (ranks 1, 2) → 1; x list a(1) → 1
    assert scores_map(scores, clips, classes, ["x", "0", "y", "y"]) == pytest.approx(1.0)
    # a labelled y, c labelled x: x list a, c, b → c at 2: 1/2; y list d, c, b → d at 1, a cut: (1 + 0) / 2
    assert scores_map(scores, clips, classes, ["y", "0", "x", "y"], top_k=3) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert scores_map(scores, clips, classes, ["y", "0", "x", "y"]) == pytest.approx((1 / 2 + (1 + 2 / 4) / 2) / 2)
