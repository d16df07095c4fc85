"""Excerpts of the shared videos, cut in the tests by stream copy (PyAV, no re-encoding)."""

from __future__ import annotations

from pathlib import Path

import av


def cut(src: Path, dst: Path, start_s: float, duration_s: float) -> Path:
    """`duration_s` seconds of the video stream of `src` from its first keyframe at or after
    `start_s`, copied into `dst` (same container format) with times from 0."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=inp.format.name) as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        first, first_t = None, 0.0
        for packet in inp.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            t = float(packet.pts * stream.time_base)
            if first is None and (t < start_s or not packet.is_keyframe):
                continue
            if first is None:
                first, first_t = packet.pts, t
            if t >= first_t + duration_s:
                break
            packet.pts -= first
            packet.dts = None if packet.dts is None else packet.dts - first
            packet.stream = copy
            out.mux(packet)
    return dst
