#!/usr/bin/env python
"""Write a SYNTHETIC set in the iQIYI-VID-2019 file format (see vidpipe/models/synthetic.py).

    python benchmarks/synthetic_iqiyi.py OUT_DIR [--identities 1000] [--train-clips 6] [--seed 0]

The files are generated, not recorded: no real person is in them, and SYNTHETIC.txt says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from vidpipe.models.synthetic import SyntheticSpec, write_synthetic_iqiyi


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    defaults = SyntheticSpec()
    for f in dataclasses.fields(SyntheticSpec):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name))
    args = p.parse_args()
    spec = SyntheticSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticSpec)})
    t = time.perf_counter()
    write_synthetic_iqiyi(args.out, spec)
    print(f"SYNTHETIC iQIYI-format set written to {args.out} in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
