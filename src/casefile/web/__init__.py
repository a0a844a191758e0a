"""casefile.web stage."""
