"""Run configuration from a file: ``--config run.yaml|run.json|run.toml``.

A file holds any subset of :class:`~predrecon.config.RunConfig`: top-level ``preset`` and
``faithful`` plus sections (``data``, ``model``, ``mlm``, ``jepa``, ``objective``, ``optim``,
``train``) of ``key: value``. Precedence: preset < file < command-line flags and ``KEY=VALUE``
overrides. The file's ``preset`` chooses the base when ``--preset`` is not given; ``faithful:
true`` applies :func:`~predrecon.presets.apply_faithful` to the base before the file's values.

Every run's resolved ``config.json`` is such a file (complete), so
``predrecon train --config RUN/config.json ...`` resolves to the same configuration.

Formats by suffix: ``.json``; ``.toml`` (``tomllib``, Python >= 3.11, else the ``tomli``
package); ``.yaml`` / ``.yml`` (PyYAML). Unknown keys and unparsable values fail with a
:class:`~predrecon.config.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import _SECTIONS, ConfigError, RunConfig, _parse_value

TOP_LEVEL = ("preset", "faithful")


def _toml(text: str, path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError(f"{path}: reading TOML needs Python >= 3.11 or the tomli package "
                              "(pip install tomli)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None


def _yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use .json / .toml") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None


def _json(text: str, path: Path) -> dict[str, Any]:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from None


READERS = {".json": _json, ".toml": _toml, ".yaml": _yaml, ".yml": _yaml}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse ``path`` (format by suffix, see :data:`READERS`) into a nested dict; checks only
    that the top level is a mapping of known sections / keys."""
    p = Path(path)
    try:
        reader = READERS[p.suffix.lower()]
    except KeyError:
        raise ConfigError(f"{p}: unknown config format {p.suffix!r} (use {', '.join(READERS)})") from None
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such config file")
    d = reader(p.read_text(encoding="utf-8"), p)
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level, got {type(d).__name__}")
    unknown = [k for k in d if k not in TOP_LEVEL and k not in _SECTIONS]
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown} (known: {', '.join((*TOP_LEVEL, *_SECTIONS))})")
    for sec in _SECTIONS:
        if sec in d and not isinstance(d[sec], dict):
            raise ConfigError(f"{p}: {sec}: expected a mapping of keys, got {d[sec]!r}")
    return d


def _coerce(value: Any, current: Any, key: str) -> Any:
    """``value`` from a file, converted to the type of the current value where that is lossless
    (YAML reads ``1e-3`` as a string; TOML / JSON lists become tuples)."""
    if isinstance(current, (tuple, list)) and isinstance(value, list):
        return tuple(value)
    if isinstance(value, str) and not isinstance(current, str):
        return _parse_value(value, tuple(current) if isinstance(current, list) else current, key)
    if isinstance(value, str):
        return value
    if isinstance(current, bool) or isinstance(value, bool):
        if isinstance(current, bool) is not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a {type(current).__name__}, got {value!r}")
        return value
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, int) and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    return value


def apply_config_file(cfg: RunConfig, d: dict[str, Any], source: str | Path = "config file") -> RunConfig:
    """``cfg`` with every section value of ``d`` (from :func:`read_config_file`) set; each section's
    checks re-run, the cross-section ones (:meth:`RunConfig.validate`) left to the caller, after the
    overrides. ``preset`` / ``faithful`` in ``d`` are the caller's (see module docstring)."""
    base = cfg.to_dict()
    for sec, values in d.items():
        if sec in TOP_LEVEL:
            continue
        for k, v in values.items():
            if k not in base[sec]:
                raise ConfigError(f"{source}: {sec}.{k}: unknown key (known: {', '.join(sorted(base[sec]))})")
            try:
                base[sec][k] = _coerce(v, base[sec][k], f"{sec}.{k}")
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
    try:
        return RunConfig.from_dict(base)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from None


def load_run_config(path: str | Path, preset: str | None = None, faithful: bool = False) -> RunConfig:
    """The full resolution for library users: base preset (``preset``, else the file's, else
    ``tiny``), faithful switches, then the file."""
    from .presets import apply_faithful, get_preset

    d = read_config_file(path)
    cfg = get_preset(preset or d.get("preset") or "tiny")
    if faithful or d.get("faithful"):
        apply_faithful(cfg)
    cfg = apply_config_file(cfg, d, path)
    try:
        return cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
