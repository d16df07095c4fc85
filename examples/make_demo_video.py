"""Make vidpipe's demo video from public-domain photos that ship inside scikit-image.

    python examples/make_demo_video.py OUT_DIR   ->  OUT_DIR/demo.mp4 and OUT_DIR/demo_truth.json

Why generate it: the README's first command needs a video on a fresh machine, and the
repository cannot ship one. Six shots with hard cuts at known frames: the astronaut
(skimage.data.astronaut, NASA, public domain) is the one person; three shots show her
face with a slow Ken Burns zoom/pan so frames differ and the face moves, one 0.8 s shot
is shorter than the 1 s clip minimum, and three shots have no face. espeak-ng speaks a
sentence per shot. demo_truth.json records cut times, shot spans, which shots show the
face (with its approximate box) and when speech plays, so tests can compare against it.

Deterministic: the same frames and the same bytes on one machine (fixed x264 threads,
bit-exact muxing). Needs the `ffmpeg` and `espeak-ng` binaries on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

FPS = 25
WIDTH, HEIGHT = 640, 360
AUDIO_RATE = 22050  # espeak-ng's native rate; ffmpeg resamples for AAC
# Face box (x0, y0, x1, y1) in astronaut() pixels, found once with skimage's LBP frontal-face cascade.
ASTRONAUT_FACE = (175.0, 70.0, 268.0, 163.0)

# (image, frames, crop at start, crop at end, speech). A crop is (center x, center y, width)
# in source pixels, 16:9; it moves linearly from start to end over the shot.
SHOTS = [
    ("astronaut", 100, (256, 144, 512), (221, 125, 300), "Hello. I am the astronaut, and this is my demo."),
    ("coffee", 75, (220, 200, 390), (380, 200, 390), "A cup of coffee, no people here."),
    ("astronaut", 125, (190, 150, 400), (260, 135, 380), "I trained for many years before my first flight."),
    ("hubble_deep_field", 20, (500, 436, 900), (500, 436, 860), ""),
    ("astronaut_mirrored", 100, (290, 125, 280), (270, 150, 460), "The view from orbit is beautiful."),
    ("rocket", 75, (320, 200, 600), (320, 180, 480), "Ready for launch."),
]
FACE_IMAGES = {"astronaut", "astronaut_mirrored"}


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def load_image(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        fail("scikit-image is not installed (pip install scikit-image)")
    if name == "astronaut_mirrored":
        return np.ascontiguousarray(data.astronaut()[:, ::-1])
    return getattr(data, name)()


def crop_at(start, end, t: float):
    """Linear interpolation of a (cx, cy, w) crop, t in [0, 1]."""
    return tuple(a + (b - a) * t for a, b in zip(start, end))


def render(img: np.ndarray, crop) -> np.ndarray:
    """Warp a 16:9 crop of img to WIDTH x HEIGHT with sub-pixel precision (smooth motion)."""
    import cv2

    cx, cy, w = crop
    s = WIDTH / w
    x0, y0 = cx - w / 2, cy - w * HEIGHT / WIDTH / 2
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], dtype=np.float64)
    return cv2.warpAffine(img, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def face_box(name: str, crop) -> list[float] | None:
    """The astronaut's face box in output pixels for a crop, or None for shots without her."""
    if name not in FACE_IMAGES:
        return None
    x0, y0, x1, y1 = ASTRONAUT_FACE
    if name == "astronaut_mirrored":
        x0, x1 = 512 - x1, 512 - x0
    cx, cy, w = crop
    s = WIDTH / w
    ox, oy = cx - w / 2, cy - w * HEIGHT / WIDTH / 2
    return [round((x0 - ox) * s, 1), round((y0 - oy) * s, 1), round((x1 - ox) * s, 1), round((y1 - oy) * s, 1)]


def speak(text: str, path: Path) -> np.ndarray:
    """Speech samples (int16 mono, AUDIO_RATE) from espeak-ng."""
    subprocess.run(["espeak-ng", "-v", "en", "-s", "165", "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        if w.getframerate() != AUDIO_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            fail(f"unexpected espeak-ng wav format in {path}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def make(out_dir: Path) -> Path:
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            fail(f"`{tool}` not found on PATH (Debian: apt-get install {tool})")
    out_dir.mkdir(parents=True, exist_ok=True)
    video, truth_path = out_dir / "demo.mp4", out_dir / "demo_truth.json"
    total_frames = sum(s[1] for s in SHOTS)
    images = {name: load_image(name) for name in {s[0] for s in SHOTS}}

    with tempfile.TemporaryDirectory(prefix="vidpipe-demo-") as tmp:
        # Audio timeline: each sentence starts 0.3 s into its shot and is cut at the shot's end.
        audio = np.zeros(round(total_frames / FPS * AUDIO_RATE), dtype=np.int16)
        shots, start = [], 0
        for i, (name, n, c0, c1, text) in enumerate(SHOTS):
            speech = None
            if text:
                samples = speak(text, Path(tmp) / f"shot{i}.wav")
                a = round((start / FPS + 0.3) * AUDIO_RATE)
                b = min(a + len(samples), round((start + n) / FPS * AUDIO_RATE))
                audio[a:b] = samples[: b - a]
                speech = {"text": text, "start_s": round(a / AUDIO_RATE, 3), "end_s": round(b / AUDIO_RATE, 3)}
            shots.append({
                "index": i,
                "image": name,
                "start_frame": start,
                "end_frame": start + n,  # exclusive
                "start_s": start / FPS,
                "end_s": (start + n) / FPS,
                "duration_s": n / FPS,
                "face": name in FACE_IMAGES,
                "face_box_start": face_box(name, c0),
                "face_box_end": face_box(name, crop_at(c0, c1, 1.0)),
                "speech": speech,
            })
            start += n
        wav = Path(tmp) / "audio.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(AUDIO_RATE)
            w.writeframes(audio.tobytes())

        cmd = [
            "ffmpeg", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-",
            "-i", str(wav),
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "fast", "-crf", "20", "-pix_fmt", "yuv420p", "-threads", "2",
            "-c:a", "aac", "-b:a", "96k", "-ar", "44100",
            "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-movflags", "+faststart", str(video),
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for name, n, c0, c1, _ in SHOTS:
                for k in range(n):
                    proc.stdin.write(render(images[name], crop_at(c0, c1, k / max(n - 1, 1))).tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            fail(f"ffmpeg failed: {err.splitlines()[-1] if err else 'rc=' + str(proc.returncode)}")

    cuts = [s["start_s"] for s in shots[1:]]
    truth = {
        "video": video.name,
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "frames": total_frames,
        "duration_s": total_frames / FPS,
        "cuts_s": cuts,
        "cut_frames": [s["start_frame"] for s in shots[1:]],
        "face_shots": [s["index"] for s in shots if s["face"]],
        "person": "astronaut (skimage.data.astronaut, Eileen Collins, NASA, public domain)",
        "note": "Shot 3 (0.8 s) is below a 1 s clip minimum; the astronaut_mirrored shot is the same "
                "person flipped left-right. Face boxes are x0,y0,x1,y1 in output pixels at the shot's "
                "first and last frame.",
        "shots": shots,
    }
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    return video


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python examples/make_demo_video.py OUT_DIR", file=sys.stderr)
        sys.exit(2)
    print(make(Path(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
