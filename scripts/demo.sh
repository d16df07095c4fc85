#!/usr/bin/env bash
# Fresh machine to feature store: set up, make the demo video, run vidpipe on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -rf demo/features  # a fresh store, so the table below shows this demo only
.venv/bin/python examples/make_demo_video.py demo/videos
.venv/bin/vidpipe run demo/videos --out demo/features "$@"
.venv/bin/python - <<'PY'
import vidpipe
clips = vidpipe.read_table("demo/features", "clips")
faces = vidpipe.read_table("demo/features", "faces")
print(clips[["clip_id", "start_s", "end_s", "status", "reason", "valid_frame_ratio", "n_faces"]].to_string(index=False))
print(f"{len(faces)} faces in {faces.clip_id.nunique()} clips -> demo/features")
PY
