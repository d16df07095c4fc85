"""Clips: each shot is a candidate; the duration rule of iQIYI-VID §3.1 decides."""

from __future__ import annotations

from dataclasses import dataclass

from vidpipe.config import ClipsConfig


@dataclass
class Clip:
    clip_id: str
    video_id: str
    shot_index: int
    start_s: float
    end_s: float
    status: str  # "ok" | "rejected"
    reason: str | None  # why a clip was rejected, None when kept

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def kept(self) -> bool:
        return self.status == "ok"

    def reject(self, reason: str) -> None:
        self.status, self.reason = "rejected", reason

    def row(self, n_frames_sampled: int) -> dict:
        """Its columns of the `clips` table (stages add theirs)."""
        return dict(
            clip_id=self.clip_id, video_id=self.video_id, shot_index=self.shot_index,
            start_s=self.start_s, end_s=self.end_s, duration_s=self.duration_s,
            status=self.status, reason=self.reason, n_frames_sampled=n_frames_sampled,
        )


def clip_id(video_id: str, shot_index: int) -> str:
    return f"{video_id}-{shot_index:04d}"


def judge_shot(video_id: str, shot_index: int, start_s: float, end_s: float, cfg: ClipsConfig) -> Clip:
    """A shot becomes a clip, kept when min_duration_s <= duration <= max_duration_s."""
    duration = end_s - start_s
    reason = None
    if duration < cfg.min_duration_s:
        reason = f"too short: {duration:.2f} s < {cfg.min_duration_s:g} s"
    elif duration > cfg.max_duration_s:
        reason = f"too long: {duration:.2f} s > {cfg.max_duration_s:g} s"
    return Clip(
        clip_id=clip_id(video_id, shot_index),
        video_id=video_id,
        shot_index=shot_index,
        start_s=start_s,
        end_s=end_s,
        status="ok" if reason is None else "rejected",
        reason=reason,
    )
