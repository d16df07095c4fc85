#!/usr/bin/env python
"""Write the adversarial SYNTHETIC set in the iQIYI-VID-2019 file layout (vidpipe/models/synthetic.py).

    python benchmarks/synthetic_iqiyi.py OUT_DIR [--size small|large] [--face-noise 2.5] [--faceless 0.4] …

Every field of ``SyntheticSpec`` is an option (``--body-uniqueness``, ``--audio-mismatch``,
``--identities``, ``--seed`` …); unset ones keep the size's value. The files are generated, not
recorded: no real person is in them, and SYNTHETIC.txt says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from vidpipe.models.synthetic import SIZES, SyntheticSpec, sized_spec, write_synthetic_iqiyi


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("out")
    p.add_argument("--size", choices=list(SIZES), default="small")
    for f in dataclasses.fields(SyntheticSpec):
        kind = type(f.default)
        p.add_argument("--" + f.name.replace("_", "-"), type=(lambda s: s.lower() in ("1", "true", "yes"))
                       if kind is bool else kind)
    args = p.parse_args()
    spec = sized_spec(args.size, **{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticSpec)
                                    if getattr(args, f.name) is not None})
    t = time.perf_counter()
    write_synthetic_iqiyi(args.out, spec)
    print(f"SYNTHETIC iQIYI-format set ({args.size}, {spec.train_size} training clips) written to {args.out} "
          f"in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
