"""casefile.report stage."""
