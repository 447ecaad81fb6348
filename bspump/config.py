"""The INI configuration: loading and typed reading, each value naming where it came from.

A config is one INI file. A ``pipelines.conf`` in the same folder is read first, so
the file itself may override it. Every value remembers the file it came from, so an
error names file, section and key. The Application holds one; the runtime reads its
own settings (:mod:`cluster.config`) from the same object.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bspump.errors import ConfigError

PIPELINES_CONF = "pipelines.conf"

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


@dataclass(frozen=True)
class Setting:
    """One configured value and the file it was read from."""

    value: str
    file: str


class Config:
    """Sections of settings read from one or more INI files, later files winning."""

    def __init__(self, sections: Mapping[str, Mapping[str, Setting]] | None = None,
                 base_dir: Path | None = None, name: str = "<config>") -> None:
        self._sections: dict[str, dict[str, Setting]] = {
            s: dict(kv) for s, kv in (sections or {}).items()
        }
        self.base_dir = base_dir or Path.cwd()
        self.name = name

    # -- loading -----------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Config:
        """Read ``path`` (and a ``pipelines.conf`` beside it, read first)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        cfg = cls(base_dir=p.resolve().parent, name=str(p))
        beside = p.resolve().parent / PIPELINES_CONF
        if beside.is_file() and beside.resolve() != p.resolve():
            cfg.read_file(beside)
        cfg.read_file(p)
        return cfg

    @classmethod
    def from_string(cls, text: str, name: str = "<string>") -> Config:
        """Build a config from INI text (tests and embedded defaults)."""
        cfg = cls(name=name)
        cfg.read_string(text, name)
        return cfg

    def read_file(self, path: Path) -> None:
        """Merge one INI file into this config."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read: {e}") from None
        self.read_string(text, str(path))

    def read_string(self, text: str, name: str) -> None:
        """Merge INI text, attributing its values to ``name``."""
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text, source=name)
        except configparser.Error as e:
            raise ConfigError(f"{name}: {' '.join(str(e).split())}") from None
        for section in parser.sections():
            target = self._sections.setdefault(section, {})
            for key, value in parser.items(section, raw=True):
                target[key] = Setting(value.strip(), name)

    # -- reading -------------------------------------------------------------------

    def sections(self) -> Iterator[str]:
        """Names of all sections."""
        return iter(self._sections)

    def has_section(self, section: str) -> bool:
        """True when the section exists."""
        return section in self._sections

    def section(self, section: str) -> dict[str, Setting]:
        """The settings of a section (empty when it does not exist)."""
        return dict(self._sections.get(section, {}))

    def where(self, section: str, key: str | None = None) -> str:
        """Human-readable location: ``file [section] key``."""
        setting = self._sections.get(section, {}).get(key) if key else None
        if setting is not None:
            file = setting.file
        else:
            files = {s.file for s in self._sections.get(section, {}).values()}
            file = files.pop() if len(files) == 1 else self.name
        return f"{file} [{section}]" + (f" {key}" if key else "")

    def error(self, section: str, key: str | None, message: str) -> ConfigError:
        """A ConfigError naming file, section and key."""
        return ConfigError(f"{self.where(section, key)}: {message}")

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        """The raw string value, or ``default``."""
        s = self._sections.get(section, {}).get(key)
        return default if s is None else s.value

    def get_str(self, section: str, key: str, default: str) -> str:
        """A string value; empty strings count as given."""
        value = self.get(section, key)
        return default if value is None else value

    def get_int(self, section: str, key: str, default: int, minimum: int | None = None,
                maximum: int | None = None) -> int:
        """An integer value, checked against its bounds."""
        raw = self.get(section, key)
        if raw is None:
            return default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise self.error(section, key, f"expected a whole number, got {raw!r}") from None
        self._check_bounds(section, key, value, minimum, maximum)
        return value

    def get_float(self, section: str, key: str, default: float, minimum: float | None = None,
                  maximum: float | None = None) -> float:
        """A float value, checked against its bounds."""
        raw = self.get(section, key)
        if raw is None:
            return default
        try:
            value = float(raw.replace("_", ""))
        except ValueError:
            raise self.error(section, key, f"expected a number, got {raw!r}") from None
        if value != value:
            raise self.error(section, key, "expected a number, got NaN")
        self._check_bounds(section, key, value, minimum, maximum)
        return value

    def get_bool(self, section: str, key: str, default: bool) -> bool:
        """A yes/no value."""
        raw = self.get(section, key)
        if raw is None:
            return default
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise self.error(section, key, f"expected yes or no, got {raw!r}")

    def _check_bounds(self, section: str, key: str, value: float, minimum: float | None,
                      maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            raise self.error(section, key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(section, key, f"must be at most {maximum}, got {value}")

    def check_keys(self, section: str, allowed: Iterable[str]) -> None:
        """Refuse keys of ``section`` that are not in ``allowed``."""
        allowed_set = set(allowed)
        for key in self._sections.get(section, {}):
            if key not in allowed_set:
                known = ", ".join(sorted(allowed_set)) or "none"
                raise self.error(section, key, f"unknown key (known keys: {known})")

    def path(self, raw: str) -> Path:
        """A path from the config: absolute as given, relative to the current folder."""
        return Path(os.path.expanduser(raw))
