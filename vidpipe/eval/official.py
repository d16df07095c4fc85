"""``vidpipe eval --strict``: the iQIYI-VID-2019 challenge's ``evaluation_map.py``, rule for rule.

The official script reads both files with ``readlines()`` and splits each stripped line on
single spaces; clip names are compared as written, ``.mp4`` included. It divides the sum of
the APs by the number of lines of the ground truth, skips identities missing from the
submission (they score 0), and asserts that the submission has at most as many lines as
the ground truth and that no list holds more than 100 distinct clips. Where it would stop
on an assertion we raise :class:`StrictEvalError` with the reason, and where it would let a
later line silently replace an earlier one of the same identity, we refuse the submission:
one line per identity at most.
"""

from __future__ import annotations

from pathlib import Path

TOP_K = 100


class StrictEvalError(ValueError):
    """A submission the official evaluation would reject (or silently mis-score)."""


def _read_lines(path: str | Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readlines()
    except OSError as e:
        raise StrictEvalError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise StrictEvalError(f"{path}: not a UTF-8 text file") from None


def strict_map(submission: str | Path, ground_truth: str | Path) -> float:
    """mAP exactly as ``evaluation_map.calculate_map(gt_val_path, my_val_path)``."""
    gt_lines = _read_lines(ground_truth)
    id2videos = {}
    for line in gt_lines:
        terms = line.strip().split(" ")
        id2videos[terms[0]] = terms[1:]
    id_num = len(gt_lines)

    sub_lines = _read_lines(submission)
    if len(sub_lines) > id_num:
        raise StrictEvalError(f"{submission}: {len(sub_lines)} lines, more than the {id_num} of the ground truth")
    my_id2videos: dict[str, list[str]] = {}
    for lineno, line in enumerate(sub_lines, start=1):
        terms = line.strip().split(" ")
        if terms[0] in my_id2videos:
            raise StrictEvalError(f"{submission}:{lineno}: identity {terms[0]} has a second line")
        my_id2videos[terms[0]] = list(dict.fromkeys(terms[1:]))  # duplicates dropped, first kept

    ap_total = 0.0
    for cid, videos in id2videos.items():
        if cid not in my_id2videos:
            continue
        my_videos = my_id2videos[cid]
        if len(my_videos) > TOP_K:
            raise StrictEvalError(f"{submission}: identity {cid} lists {len(my_videos)} distinct clips, "
                                  f"more than {TOP_K}")
        if not videos:
            raise StrictEvalError(f"{ground_truth}: identity {cid} has no clip")
        ap, hits, positives = 0.0, 0, set(videos)
        for rank, video in enumerate(my_videos, start=1):
            if video in positives:
                hits += 1
                ap += hits / rank
        ap_total += ap / len(videos)
    return ap_total / id_num
