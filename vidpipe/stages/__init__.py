"""Plug-in stages of `vidpipe run`, one module each; every module here is found and
registered automatically (see `vidpipe.pipeline.stage`)."""
