#!/usr/bin/env python
"""Peak memory of the fusion model on large data, per face row.

    python benchmarks/bench_fusion_memory.py                          # 1M and 5M face rows, convert 1M
    python benchmarks/bench_fusion_memory.py --rows 200000 --convert-rows 200000   # quick look

1. **Training**: a SYNTHETIC feature store of N face rows (512-d float16, 1–63 faces per
   clip, 1,000 identities) is written in chunks; then ``vidpipe train --features … --epochs 1``
   runs in a child process, and its peak resident memory (the kernel's high-water mark,
   VmHWM, reported by the child at exit) is divided by N. Target: ≤ 2 KB per face row.
2. **Conversion**: an iQIYI-format ``face_train_v2.pickle`` of N rows is converted into a store
   by the streaming reader (``vidpipe.models.iqiyi_store``), in a child process; for
   comparison the whole-file reader (``pickle.load`` of the same file) in another.

Each child's peak includes the interpreter, torch and pyarrow (measured alone too, as
"start-up"). Files go under --work (default: a temporary folder, removed afterwards).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DIM = 512
IDENTITIES = 1000


_REPORT = """
import atexit, runpy, sys
report, code = sys.argv[1], sys.argv[2]
del sys.argv[1:3]

def write_peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    with open(report, "w") as out:
        out.write(str(kb))

atexit.register(write_peak)
if code.startswith("-m "):
    runpy.run_module(code[3:], run_name="__main__", alter_sys=True)
else:
    exec(compile(code, "<bench>", "exec"), {"__name__": "__main__"})
"""


def child_peak(code: str, *argv: str) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``code`` (Python source, or "-m module") run in a child
    process with ``argv``. The child reports its own VmHWM at exit: the rusage of a child
    also counts the parent's memory at the fork, which would blur small peaks."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.NamedTemporaryFile("r", suffix=".hwm") as report:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _REPORT, report.name, code, *argv], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise RuntimeError(f"{code[:40]} … failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return int(report.read()) / 1024, wall


def clip_sizes(rows: int, rng: np.random.Generator) -> np.ndarray:
    sizes = rng.integers(1, 64, size=rows // 32 + 64)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), rows) + 1]
    sizes[-1] -= sizes.sum() - rows
    return sizes[sizes > 0]


def write_store(out: Path, rows: int, seed: int = 0) -> Path:
    """A store with ``rows`` face rows (clips table, faces table, labels.csv), written in chunks."""
    rng = np.random.default_rng(seed)
    sizes = clip_sizes(rows, rng)
    clips = [f"c{i:08d}" for i in range(len(sizes))]
    (out / "clips").mkdir(parents=True)
    (out / "faces").mkdir()
    pq.write_table(pa.table({"clip_id": clips, "status": ["ok"] * len(clips)}), out / "clips" / "part-0.parquet")
    people = rng.integers(1, IDENTITIES + 1, len(clips))
    with open(out / "labels.csv", "w") as f:
        f.write("clip_id,identity\n" + "".join(f"{c},{p}\n" for c, p in zip(clips, people)))
    protos = rng.standard_normal((IDENTITIES + 1, DIM)).astype(np.float32)
    clip_of_row = np.repeat(np.arange(len(sizes)), sizes)
    rank = np.arange(rows) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    writer = None
    for lo in range(0, rows, 200_000):
        hi = min(rows, lo + 200_000)
        c = clip_of_row[lo:hi]
        emb = (protos[people[c]] + rng.standard_normal((hi - lo, DIM), dtype=np.float32)).astype(np.float16)
        table = pa.table({
            "clip_id": pa.array(np.asarray(clips, dtype=object)[c], pa.string()),
            "rank": pa.array(rank[lo:hi].astype(np.int32)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), DIM),
        })
        writer = writer or pq.ParquetWriter(out / "faces" / "part-0.parquet", table.schema)
        writer.write_table(table, row_group_size=65_536)
    writer.close()
    return out


def write_pickle(path: Path, rows: int, seed: int = 0) -> Path:
    """A face pickle of ``rows`` rows in the Python-2 release layout."""
    from vidpipe.eval.iqiyi_io import write_py2_pickle

    rng = np.random.default_rng(seed)
    sizes = clip_sizes(rows, rng)
    videos = {}
    for v, n in enumerate(sizes):
        feats = rng.standard_normal((n, DIM), dtype=np.float32).astype(np.float16)
        boxes = rng.uniform(0, 200, (n, 4)).astype(np.float32)
        videos[b"IQIYI_VID_TRAIN_%07d" % v] = [[b"%04d" % i, boxes[i], 0.99, float(90 - i), feats[i]] for i in range(n)]
    write_py2_pickle(path, videos)
    return path


STARTUP = "import torch, pyarrow.dataset, vidpipe.models.train"
CONVERT = "import sys; from vidpipe.models.iqiyi_store import iqiyi_store; iqiyi_store(sys.argv[1], 'train', cache=sys.argv[2])"
WHOLE = "import sys; from vidpipe.eval.iqiyi_io import read_modality_pickle; read_modality_pickle(sys.argv[1], 'face')"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 5_000_000])
    p.add_argument("--convert-rows", type=int, nargs="*", default=[1_000_000])
    p.add_argument("--work", help="folder for the generated files (default: a temporary one, removed)")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="vidpipe_bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        start_mb, _ = child_peak(STARTUP)
        print(f"\n### Peak memory per face row (512-d), child processes; start-up alone {start_mb:.0f} MiB\n")
        print("| step | face rows | peak MiB | bytes per face row | target | wall s |")
        print("|---|---|---|---|---|---|")
        for rows in args.rows:
            store = work / f"store_{rows}"
            if not (store / "labels.csv").is_file():
                print(f"writing a store of {rows:,} face rows …", file=sys.stderr, flush=True)
                shutil.rmtree(store, ignore_errors=True)
                write_store(store, rows)
            model = work / f"model_{rows}"
            shutil.rmtree(model, ignore_errors=True)
            peak, wall = child_peak("-m vidpipe", "train", "--features", str(store), "--labels",
                                    str(store / "labels.csv"), "--out", str(model), "--epochs", "1", "--quiet")
            per_row = peak * 2**20 / rows
            print(f"| vidpipe train --epochs 1 (famf, default recipe) | {rows:,} | {peak:.0f} | {per_row:.0f} | "
                  f"≤ 2048 {'PASS' if per_row <= 2048 else 'FAIL'} | {wall:.0f} |", flush=True)
            shutil.rmtree(model, ignore_errors=True)
        for rows in args.convert_rows:
            root = work / f"iqiyi_{rows}"
            pickle_path = root / "face_train_v2.pickle"
            if not pickle_path.is_file():
                print(f"writing a face pickle of {rows:,} rows …", file=sys.stderr, flush=True)
                root.mkdir(parents=True, exist_ok=True)
                write_pickle(pickle_path, rows)
            mb = pickle_path.stat().st_size / 2**20
            shutil.rmtree(work / f"converted_{rows}", ignore_errors=True)
            peak, wall = child_peak(CONVERT, str(root), str(work / f"converted_{rows}"))
            print(f"| convert face pickle ({mb:.0f} MiB) → store, streaming | {rows:,} | {peak:.0f} | "
                  f"{peak * 2**20 / rows:.0f} | – | {wall:.0f} |", flush=True)
            peak, wall = child_peak(WHOLE, str(pickle_path))
            print(f"| for comparison: pickle.load of the same file (whole-file reader) | {rows:,} | {peak:.0f} | "
                  f"{peak * 2**20 / rows:.0f} | – | {wall:.0f} |", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
