"""casefile: evidence -> events -> detections -> findings -> attribution -> outputs."""

__version__ = "0.1.0"
