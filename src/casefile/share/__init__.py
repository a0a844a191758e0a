"""casefile.share stage."""
