"""Evaluation: mAP@100 and rank-1 as the iQIYI-VID evaluation, and iQIYI-VID-2019 file I/O."""

from vidpipe.eval.metrics import (
    TOP_K,
    RetrievalScores,
    average_precision,
    clip_accuracy,
    evaluate_retrieval,
    mean_average_precision,
)

__all__ = [
    "TOP_K",
    "RetrievalScores",
    "average_precision",
    "clip_accuracy",
    "evaluate_retrieval",
    "mean_average_precision",
]
