"""casefile.ingest stage."""
