"""vidpipe: raw video to per-clip person identities.

The Python API is the product; the `vidpipe` command is a thin shell over it:

    import vidpipe
    report = vidpipe.run(["videos/"], "features/")
    clips = vidpipe.read_table("features/", "clips")   # a pandas DataFrame
"""

__version__ = "0.1.0"

from vidpipe.api import read_table, run  # noqa: E402

__all__ = ["__version__", "run", "read_table"]
