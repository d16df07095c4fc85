"""Review: people check the automatic identities clip by clip (iQIYI-VID §3.4).

    import vidpipe
    vidpipe.serve_review("features/", "gallery.db")      # the page, until Ctrl+C

A clip plays beside three reference clips of the identity proposed for it and its best
face crops; a reviewer accepts, rejects, assigns another person or marks it as noise.
Decisions go to an SQLite file beside the gallery (`gallery.review.db`, WAL) the moment
they are made, and into `OUT/identities/review.parquet` (source 'review', the most trusted
route). A blind second pass and a third queue for disagreements give agreement statistics
per identity. `vidpipe review` is a thin shell over `serve_review`.
"""

from vidpipe.review.agreement import Agreement, agreement
from vidpipe.review.db import Decision, ReviewDB, ReviewError, final_labels, review_db_path
from vidpipe.review.publish import publish
from vidpipe.review.server import ReviewServer, close_server, make_server, serve_review

__all__ = ["Agreement", "Decision", "ReviewDB", "ReviewError", "ReviewServer", "agreement", "close_server",
           "final_labels", "make_server", "publish", "review_db_path", "serve_review"]
