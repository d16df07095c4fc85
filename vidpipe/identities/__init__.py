"""Identities: who is in which clip of a feature store.

    import vidpipe
    vidpipe.enroll("people/", "gallery.db")             # a folder per person: photos, clips
    report = vidpipe.tag("features/", "gallery.db")     # -> features/identities/tags.parquet
    vidpipe.timeline("features/")                       # per video: person -> time ranges
    vidpipe.search("face.jpg", "features/").hits        # clips where that face appears
    vidpipe.unknown_people("features/")                 # clusters of faces nobody enrolled
    vidpipe.name_cluster("features/", "gallery.db", 3, "Ada")

The `vidpipe enroll | gallery | tag | people | timeline | search` commands are thin shells
over these functions. Every bad input raises `IdentitiesError` with a one-line message.
"""

from vidpipe.identities.calibration import Calibration, calibrate
from vidpipe.identities.cluster import UnknownPerson, unknown_people
from vidpipe.identities.encoder import IdentitiesError
from vidpipe.identities.enroll import EnrollReport, enroll
from vidpipe.identities.gallery import Gallery
from vidpipe.identities.match import Thresholds
from vidpipe.identities.people import IdentifiedFace, identify, name_cluster
from vidpipe.identities.search import SearchHit, SearchResult, search
from vidpipe.identities.table import IDENTITY_SCHEMA, read_identities, resolve
from vidpipe.identities.tag import TagOptions, TagReport, tag
from vidpipe.identities.timeline import timeline, write_timeline

__all__ = [
    "Calibration", "EnrollReport", "Gallery", "IDENTITY_SCHEMA", "IdentifiedFace", "IdentitiesError", "SearchHit",
    "SearchResult", "TagOptions", "TagReport", "Thresholds", "UnknownPerson", "calibrate", "enroll", "identify",
    "name_cluster", "read_identities", "resolve", "search", "tag", "timeline", "unknown_people", "write_timeline",
]
