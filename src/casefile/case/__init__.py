"""casefile.case stage."""
