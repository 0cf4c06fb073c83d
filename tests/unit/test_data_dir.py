"""Where the embedded PostgreSQL lives by default: one place per user — CREDITJOBS_DATA_DIR, XDG_DATA_HOME, HOME, for
root too (the system path only when root has neither)."""

from __future__ import annotations

from pathlib import Path

from credit_jobs.entrypoints.cli.data_dir import ROOT_DATA_DIR, data_dir, default_data_dir

HOME = Path("/home/ana")


def test_a_user_gets_the_xdg_data_directory() -> None:
    assert default_data_dir({}, uid=1000, home=HOME) == HOME / ".local/share/credit-jobs"
    assert default_data_dir({"XDG_DATA_HOME": "/data/ana"}, uid=1000, home=HOME) == Path("/data/ana/credit-jobs")
    # XDG: a relative XDG_DATA_HOME is invalid and ignored
    assert default_data_dir({"XDG_DATA_HOME": "rel"}, uid=1000, home=HOME) == HOME / ".local/share/credit-jobs"


def test_root_follows_xdg_data_home_then_home_and_gets_the_system_path_only_without_either() -> None:
    """Seen: as root the data directory ignored HOME and XDG_DATA_HOME, so every root user shared one server."""
    assert default_data_dir({"HOME": "/root"}, uid=0, home=Path("/root")) == Path("/root/.local/share/credit-jobs")
    assert default_data_dir({"HOME": "/srv/ops"}, uid=0, home=Path("/srv/ops")) == Path(
        "/srv/ops/.local/share/credit-jobs"
    )
    xdg = {"HOME": "/root", "XDG_DATA_HOME": "/data/ops"}
    assert default_data_dir(xdg, uid=0, home=Path("/root")) == Path("/data/ops/credit-jobs")
    assert default_data_dir({"XDG_DATA_HOME": "/data/ops"}, uid=0, home=Path("/root")) == Path("/data/ops/credit-jobs")
    assert default_data_dir({}, uid=0, home=Path("/root")) == ROOT_DATA_DIR
    assert default_data_dir({"HOME": " "}, uid=0, home=Path("/root")) == ROOT_DATA_DIR


def test_creditjobs_data_dir_wins_and_is_made_absolute(tmp_path: Path) -> None:
    assert data_dir(tmp_path / "x", {}, uid=0, home=Path("/root")) == tmp_path / "x"
    assert data_dir(Path(".data"), {}, uid=1000, home=HOME) == Path.cwd() / ".data"
    assert data_dir(None, {}, uid=1000, home=HOME) == HOME / ".local/share/credit-jobs"
