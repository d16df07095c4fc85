"""The package version, in a module of its own so that stages and the store can record it
without importing the `vidpipe` facade."""

__version__ = "0.2.0"
