"""Where the embedded PostgreSQL lives by default (issue 13 §9): one place per user, never under /root."""

from __future__ import annotations

from pathlib import Path

from credit_jobs.entrypoints.data_dir import ROOT_DATA_DIR, data_dir, default_data_dir

HOME = Path("/home/ana")


def test_a_user_gets_the_xdg_data_directory() -> None:
    assert default_data_dir({}, uid=1000, home=HOME) == HOME / ".local/share/credit-jobs"
    assert default_data_dir({"XDG_DATA_HOME": "/data/ana"}, uid=1000, home=HOME) == Path("/data/ana/credit-jobs")
    # XDG: a relative XDG_DATA_HOME is invalid and ignored
    assert default_data_dir({"XDG_DATA_HOME": "rel"}, uid=1000, home=HOME) == HOME / ".local/share/credit-jobs"


def test_root_never_gets_a_directory_under_root_home() -> None:
    for env in ({}, {"XDG_DATA_HOME": "/root/.local/share"}):
        chosen = default_data_dir(env, uid=0, home=Path("/root"))
        assert chosen == ROOT_DATA_DIR
        assert Path("/root") not in chosen.parents


def test_creditjobs_data_dir_wins_and_is_made_absolute(tmp_path: Path) -> None:
    assert data_dir(tmp_path / "x", {}, uid=0, home=Path("/root")) == tmp_path / "x"
    assert data_dir(Path(".data"), {}, uid=1000, home=HOME) == Path.cwd() / ".data"
    assert data_dir(None, {}, uid=1000, home=HOME) == HOME / ".local/share/credit-jobs"
