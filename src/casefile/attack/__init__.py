"""ATT&CK knowledge base: catalog lookups, group/campaign relationships, vendor names and sponsors."""

from casefile.attack.kb import KnowledgeBase, installed_bundles, load_knowledge_base
from casefile.attack.models import Campaign, Group, Software, Tactic, Technique, Use

__all__ = [
    "Campaign",
    "Group",
    "KnowledgeBase",
    "Software",
    "Tactic",
    "Technique",
    "Use",
    "installed_bundles",
    "load_knowledge_base",
]
