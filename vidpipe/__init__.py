"""vidpipe: raw video to per-clip person identities.

The Python API is the product; the `vidpipe` command is a thin shell over it:

    import vidpipe
    report = vidpipe.run(["videos/"], "features/")
    clips = vidpipe.read_table("features/", "clips")   # a pandas DataFrame
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "run", "read_table"]


def __getattr__(name: str):
    # Lazy: `import vidpipe.models` (torch) must not pay for the video stack and vice versa.
    if name in ("run", "read_table"):
        from vidpipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'vidpipe' has no attribute {name!r}")
