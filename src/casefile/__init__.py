"""casefile: evidence -> events -> detections -> findings -> attribution -> outputs."""

from casefile import native

__version__ = "0.1.0"

native.install()  # before any hot module is imported: see casefile.native
