"""Where the embedded PostgreSQL keeps its data when no DATABASE_URL is set: one documented place per user.

Not the current directory (a run from elsewhere would silently start a new, empty database): `CREDITJOBS_DATA_DIR` if
set, else `$XDG_DATA_HOME/credit-jobs`, else `$HOME/.local/share/credit-jobs` — for root too, so two root users (two
`HOME`s) never share one server. Only root with neither `XDG_DATA_HOME` nor `HOME` set gets the system path
`/var/lib/credit-jobs`. (Run as root, the server runs as an unprivileged system user, and the directories above its data
get search permission for others, never read: `adapters/embedded_database.py`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ROOT_DATA_DIR = Path("/var/lib/credit-jobs")
LEGACY_DATA_DIR = Path(".data")  # where earlier versions kept it: relative to the current directory


def default_data_dir(env: Mapping[str, str], *, uid: int, home: Path) -> Path:
    """The data directory when CREDITJOBS_DATA_DIR is not set (pure: the caller passes the environment and the
    account's home directory)."""
    xdg = env.get("XDG_DATA_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():  # XDG: a relative XDG_DATA_HOME is invalid and ignored
        return Path(xdg) / "credit-jobs"
    if uid == 0 and not env.get("HOME", "").strip():
        return ROOT_DATA_DIR
    return home / ".local" / "share" / "credit-jobs"


def data_dir(configured: Path | None, env: Mapping[str, str], *, uid: int, home: Path) -> Path:
    """CREDITJOBS_DATA_DIR (made absolute) or the default; always absolute, so messages name one place."""
    chosen = configured if configured is not None else default_data_dir(env, uid=uid, home=home)
    return chosen.expanduser().resolve()
