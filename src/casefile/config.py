"""Where casefile keeps its data: one settings object, passed in, never read from module globals."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir

#: Environment variable naming casefile's data directory (rules, ATT&CK bundle, intel store).
HOME_ENV = "CASEFILE_HOME"
#: Environment variable naming a local copy of the reference data (tests and benchmarks use it).
SHARED_DATA_ENV = "CASEFILE_SHARED_DATA"


@dataclass(frozen=True)
class Settings:
    """Paths casefile reads and writes."""

    data_dir: Path

    @classmethod
    def from_env(cls) -> Settings:
        home = os.environ.get(HOME_ENV)
        return cls(data_dir=Path(home) if home else Path(user_data_dir("casefile", appauthor=False)))

    @property
    def rules_dir(self) -> Path:
        """SigmaHQ rules installed by `casefile rules update`."""
        return self.data_dir / "sigma"

    @property
    def attack_dir(self) -> Path:
        """ATT&CK bundles installed by `casefile rules update`."""
        return self.data_dir / "attack"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def shared_data_dir() -> Path | None:
    """The reference data folder for tests and benchmarks.

    $CASEFILE_SHARED_DATA, else ../shared/data beside the repository.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None
