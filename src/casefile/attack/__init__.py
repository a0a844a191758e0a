"""casefile.attack stage."""
