"""`casefile rules update`: install SigmaHQ rules and the ATT&CK bundle into the data directory.

Online: download the SigmaHQ release zip and the ATT&CK enterprise bundle (URLs overridable by
argument or environment, so tests serve them from 127.0.0.1). Air-gapped: copy a local folder laid
out like the reference data (sigma/, attack/, misp-galaxy/, vendor-naming/).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from casefile.config import Settings
from casefile.errors import ConfigError

if TYPE_CHECKING:  # httpx is imported by the download itself: every `casefile` command imports this module
    import httpx

SIGMA_URL_ENV = "CASEFILE_SIGMA_URL"
ATTACK_URL_ENV = "CASEFILE_ATTACK_URL"
DEFAULT_SIGMA_URL = "https://github.com/SigmaHQ/sigma/releases/latest/download/sigma_all_rules.zip"
DEFAULT_ATTACK_URL = (
    "https://raw.githubusercontent.com/mitre-attack/attack-stix-data/master/"
    "enterprise-attack/enterprise-attack.json"
)
#: Folders copied by `--from`; sigma/ is required, the rest are optional.
OFFLINE_FOLDERS = ("sigma", "attack", "misp-galaxy", "vendor-naming")
#: Rule folders used by default when present under the installed sigma/ folder.
DEFAULT_RULE_FOLDERS = ("rules", "rules-emerging-threats", "rules-threat-hunting")
ATTACK_FILE = "enterprise-attack.json"


@dataclass(frozen=True)
class UpdateResult:
    """What was installed where."""

    rules_dir: Path
    rule_files: int
    attack_file: Path | None
    copied: tuple[str, ...] = ()


def installed_rule_dirs(settings: Settings) -> list[Path]:
    """The rule folders `--rules` defaults to; ConfigError when no rules are installed."""
    root = settings.rules_dir
    dirs = [root / f for f in DEFAULT_RULE_FOLDERS if (root / f).is_dir()]
    if dirs:
        return dirs
    if root.is_dir() and any(root.rglob("*.yml")):
        return [root]
    raise ConfigError(
        f"no Sigma rules installed in {root}: run `casefile rules update` "
        "(or `casefile rules update --from DIR` offline), or pass --rules DIR"
    )


#: Bounds on what an update may take (SigmaHQ's zip is a few MB, about 40 MB unpacked; the ATT&CK bundle
#: about 50 MB): a wrong URL or a hostile mirror must not fill the memory or the disk.
MAX_DOWNLOAD = 1 << 30
MAX_UNPACKED = 2 << 30


def _safe_extract(data: bytes, dest: Path, origin: str) -> int:
    """Extract a zip into dest, refusing absolute paths and `..` (zip-slip) and more than MAX_UNPACKED
    bytes unpacked (a zip bomb; counted as written, not as the archive declares); returns .yml count."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"{origin}: not a zip archive ({exc})") from exc
    count = written = 0
    limit = MAX_UNPACKED
    with archive:
        for info in archive.infolist():
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts:
                raise ConfigError(f"{origin}: refusing unsafe member path {info.filename!r}")
            if info.is_dir():
                continue
            target = dest.joinpath(*name.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as dst:
                while block := src.read(1 << 20):
                    written += len(block)
                    if written > limit:
                        raise ConfigError(
                            f"{origin}: unpacks to more than {limit >> 20} MiB; refusing it as a zip bomb"
                        )
                    dst.write(block)
            count += name.suffix in (".yml", ".yaml")
    return count


def _fetch(client: httpx.Client, url: str) -> bytes:
    """The body at `url`, at most MAX_DOWNLOAD bytes."""
    import httpx

    limit = MAX_DOWNLOAD
    try:
        with client.stream("GET", url, follow_redirects=True) as response:
            response.raise_for_status()
            parts, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ConfigError(f"download of {url} stopped: larger than {limit >> 20} MiB")
                parts.append(chunk)
    except httpx.HTTPError as exc:
        raise ConfigError(f"download of {url} failed: {exc}") from exc
    return b"".join(parts)


def _check_bundle(data: bytes, url: str) -> None:
    """ConfigError unless `data` is a STIX bundle: a proxy's or captive portal's page answered with 200 must
    not replace the installed knowledge base."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{url}: not JSON ({exc}); the installed ATT&CK bundle is kept") from None
    if not (isinstance(parsed, dict) and parsed.get("type") == "bundle"):
        raise ConfigError(f"{url}: JSON, but not a STIX bundle; the installed ATT&CK bundle is kept")


def _replace_dir(staging: Path, final: Path) -> None:
    """Swap a fully written staging folder into place, so a failed update leaves the old one intact."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    if old.exists():
        shutil.rmtree(old)


def update_online(
    settings: Settings,
    *,
    sigma_url: str | None = None,
    attack_url: str | None = None,
    timeout: float = 120.0,
) -> UpdateResult:
    """Download the SigmaHQ rules zip and the ATT&CK enterprise bundle into `settings.data_dir`."""
    sigma_url = sigma_url or os.environ.get(SIGMA_URL_ENV) or DEFAULT_SIGMA_URL
    attack_url = attack_url or os.environ.get(ATTACK_URL_ENV) or DEFAULT_ATTACK_URL
    import httpx

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=timeout) as client:
        rules_zip = _fetch(client, sigma_url)
        bundle = _fetch(client, attack_url)
    staging = settings.data_dir / "sigma.new"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        count = _safe_extract(rules_zip, staging, sigma_url)
        if count == 0:
            raise ConfigError(f"{sigma_url}: the archive holds no Sigma .yml rules")
        _check_bundle(bundle, attack_url)  # before anything installed is replaced
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace_dir(staging, settings.rules_dir)
    settings.attack_dir.mkdir(parents=True, exist_ok=True)
    attack_file = settings.attack_dir / ATTACK_FILE
    tmp = attack_file.with_suffix(".json.part")
    tmp.write_bytes(bundle)
    tmp.replace(attack_file)
    return UpdateResult(settings.rules_dir, count, attack_file)


def update_offline(settings: Settings, source: Path) -> UpdateResult:
    """Copy a local reference-data folder (sigma/ required; attack/, misp-galaxy/, vendor-naming/)."""
    if not (source / "sigma").is_dir():
        raise ConfigError(
            f"{source}: no sigma/ folder; expected the layout sigma/, attack/, misp-galaxy/, vendor-naming/"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in OFFLINE_FOLDERS:
        src = source / name
        if not src.is_dir():
            continue
        staging = settings.data_dir / f"{name}.new"
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(src, staging)
        _replace_dir(staging, settings.data_dir / name)
        copied.append(name)
    count = sum(1 for _ in settings.rules_dir.rglob("*.yml"))
    bundles = (
        sorted(
            p for p in settings.attack_dir.iterdir() if p.is_file() and p.name.endswith((".json", ".json.gz"))
        )
        if settings.attack_dir.is_dir()
        else []
    )
    enterprise = [b for b in bundles if "enterprise" in b.name]
    chosen = enterprise or bundles
    attack_file = chosen[0] if chosen else None
    return UpdateResult(settings.rules_dir, count, attack_file, tuple(copied))
