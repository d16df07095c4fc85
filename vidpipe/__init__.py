"""vidpipe: raw video to per-clip person identities.

The Python API is the product; the `vidpipe` command is a thin shell over it:

    import vidpipe
    report = vidpipe.run(["videos/"], "features/")
    clips = vidpipe.read_table("features/", "clips")   # a pandas DataFrame
"""

from __future__ import annotations

from vidpipe._version import __version__

# Lazy: `import vidpipe.models` (torch) must not pay for the video stack and vice versa.
_API = {"run": "vidpipe.api", "read_table": "vidpipe.store", "Config": "vidpipe.config"}
_API.update(dict.fromkeys(("enroll", "tag", "search", "timeline", "identify", "unknown_people", "name_cluster",
                           "read_identities", "Gallery"), "vidpipe.identities"))
_API.update({"serve_review": "vidpipe.review", "export_dataset": "vidpipe.export", "ExportOptions": "vidpipe.export"})

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'vidpipe' has no attribute {name!r}")
