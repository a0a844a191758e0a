"""Record-shape normalisers: one module per JSON shape, each registering itself in SHAPES."""

from . import ecs, evtx_json, evtxecmd, flat

__all__ = ["ecs", "evtx_json", "evtxecmd", "flat"]
