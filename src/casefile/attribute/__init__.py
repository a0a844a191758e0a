"""Attribution: rank known threat groups (and "no known group") for the evidence of an activity cluster."""

from casefile.attribute.engine import ModelParams, attribute
from casefile.attribute.models import (
    Attribution,
    Evidence,
    EvidenceItem,
    GroupHypothesis,
    SponsorHypothesis,
    TechniqueSighting,
)

__all__ = [
    "Attribution",
    "Evidence",
    "EvidenceItem",
    "GroupHypothesis",
    "ModelParams",
    "SponsorHypothesis",
    "TechniqueSighting",
    "attribute",
]
