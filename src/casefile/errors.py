"""One exception root for casefile; every subclass says where the problem is and what to do."""

from __future__ import annotations


class CasefileError(Exception):
    """Root of every error casefile raises on purpose."""


class ConfigError(CasefileError):
    """A setting, option or missing data directory that the user must fix."""


class InputError(CasefileError):
    """Evidence that cannot be read: names the file, the record (if any) and the reason."""

    def __init__(self, file: str, reason: str, record: int | None = None) -> None:
        self.file = file
        self.reason = reason
        self.record = record
        where = f"{file} (record {record})" if record is not None else file
        super().__init__(f"{where}: {reason}")


class RuleError(CasefileError):
    """A Sigma rule that cannot be loaded or compiled: names the rule file/id and the reason."""

    def __init__(self, source: str, reason: str, rule_id: str | None = None) -> None:
        self.source = source
        self.reason = reason
        self.rule_id = rule_id
        ident = f" [{rule_id}]" if rule_id else ""
        super().__init__(f"{source}{ident}: {reason}")


class KnowledgeBaseError(CasefileError):
    """An ATT&CK / STIX knowledge base that cannot be loaded."""


class CaseError(CasefileError):
    """A case folder that is missing, locked or inconsistent."""


class IntelError(CasefileError):
    """An indicator, STIX object or feed that cannot be imported (names the object and reason)."""


class RegistryError(CasefileError):
    """A plugin registered twice or looked up under an unknown name."""
