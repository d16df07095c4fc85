"""The stages of `vidpipe run`: one module per stage, one typed record in and out."""
