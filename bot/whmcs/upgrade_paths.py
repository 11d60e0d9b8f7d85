"""What GetProducts does not say: which products each product can be upgraded to, and
the names of the product groups, read from `WHMCS_UPGRADES_FILE`
(`config/whmcs_upgrades.toml` documents its format)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.config import ConfigError
from bot.whmcs.values import is_id
from flows.billing import Category


@dataclass(frozen=True, slots=True)
class UpgradePaths:
    """`WHMCS_UPGRADES_FILE`: pid → the pids it can move to, and product group names."""

    targets: Mapping[str, tuple[str, ...]]
    categories: Mapping[str, str]

    @classmethod
    def load(cls, path: Path) -> UpgradePaths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"WHMCS_UPGRADES_FILE {path} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"WHMCS_UPGRADES_FILE {path}: {e}") from None
        upgrades = data.get("upgrades", {})
        categories = data.get("categories", {})
        if not isinstance(upgrades, dict) or not isinstance(categories, dict):
            raise ConfigError(f"{path}: [upgrades] and [categories] must be tables")
        targets: dict[str, tuple[str, ...]] = {}
        for pid, listed in upgrades.items():
            if not is_id(pid) or not isinstance(listed, list):
                raise ConfigError(f'{path}: [upgrades] "{pid}" must be a pid = a list of pids')
            if not all(isinstance(t, str | int) and is_id(str(t)) for t in listed):
                raise ConfigError(f'{path}: [upgrades] "{pid}" lists something not a pid')
            targets[pid] = tuple(str(t) for t in listed)
        names: dict[str, str] = {}
        for gid, name in categories.items():
            if not is_id(gid) or not isinstance(name, str) or not name.strip():
                raise ConfigError(f'{path}: [categories] "{gid}" must be a gid = a name')
            names[gid] = name.strip()
        return cls(targets, names)

    def category(self, gid: str) -> Category:
        return Category(gid, self.categories.get(gid, f"Grupo {gid}"))
