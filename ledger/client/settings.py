"""Where the client finds its server, token and state: flags, then LEDGER_* variables, then
$XDG_CONFIG_HOME/ledger/config.toml; state under $XDG_STATE_HOME/ledger."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClientSettings", "ConfigError", "config_path", "resolve", "state_dir"]


class ConfigError(Exception):
    """The server or token cannot be found, or the config file cannot be trusted (exit 2)."""


@dataclass(frozen=True)
class ClientSettings:
    server: str
    token: str
    state: Path


def _xdg(env: Mapping[str, str], name: str, fallback: str) -> Path:
    # The XDG spec: an unset or relative value is ignored.
    raw = env.get(name, "")
    return Path(raw) if raw and os.path.isabs(raw) else Path.home() / fallback


def config_path(env: Mapping[str, str]) -> Path:
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "ledger" / "config.toml"


def state_dir(env: Mapping[str, str]) -> Path:
    return _xdg(env, "XDG_STATE_HOME", ".local/state") / "ledger"


def _read_config(path: Path) -> dict[str, object]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    # The file holds a bearer token: one others can read may already have leaked, and one
    # others can write could point the client at another server.
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(f"{path} is mode {stat.S_IMODE(mode):04o}; it holds a token, so make it 0600 (chmod 600)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def resolve(server: str | None, token: str | None, env: Mapping[str, str] | None = None) -> ClientSettings:
    env = os.environ if env is None else env
    server = server or env.get("LEDGER_URL") or None
    token = token or env.get("LEDGER_TOKEN") or None
    if server is None or token is None:
        path = config_path(env)
        config = _read_config(path)
        server = server or _text(config, "url", path)
        token = token or _text(config, "token", path)
    if not server:
        raise ConfigError('no server: give --server, set LEDGER_URL, or put url = "..." in the config file')
    if not server.startswith(("http://", "https://")):
        raise ConfigError(f"the server {server!r} is not an http:// or https:// URL")
    if not token:
        raise ConfigError('no token: give --token, set LEDGER_TOKEN, or put token = "..." in the config file')
    return ClientSettings(server=server.rstrip("/"), token=token, state=state_dir(env))


def _text(config: Mapping[str, object], key: str, path: Path) -> str | None:
    value = config.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: {key} must be a string")
    return value
