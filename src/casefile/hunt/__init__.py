"""casefile.hunt stage."""
