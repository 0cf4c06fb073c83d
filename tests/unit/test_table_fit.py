"""Tables in a terminal drop whole columns in a documented order, never break a word or an id."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from credit_jobs.entrypoints.cli.table_fit import GAP, MIN_SHORTENED, fit, natural_widths

HEADERS = ("run id", "job", "period", "shard", "trigger", "status", "started", "finished", "error")
DROP = ("error", "finished", "trigger", "shard", "started", "period", "job", "status")
ROW = (
    "1627a44d-62cd-4e42-a1a8-75b4856d2759",
    "distribute-credits",
    "2026-12",
    "0/1",
    "schedule",
    "succeeded",
    "2026-12-07 11:22:42 UTC",
    "11:22:43",
    "",
)


def _width(fitted, widths) -> int:
    shown = [widths[i] for i in fitted.shown]
    if fitted.shortened_to is not None:
        shown[fitted.shown.index(HEADERS.index("error"))] = fitted.shortened_to
    return sum(shown) + GAP * (len(shown) - 1)


def test_at_80_columns_a_run_keeps_its_id_job_period_and_status_and_names_what_it_left_out() -> None:
    fitted = fit(HEADERS, [ROW], 80, DROP, shortenable="error")
    assert [HEADERS[i] for i in fitted.shown] == ["run id", "job", "period", "status"]
    assert fitted.dropped == ["shard", "trigger", "started", "finished", "error"]
    assert fitted.note(80) == (
        "not shown at 80 columns: shard, trigger, started, finished, error (a wider terminal, or --json, shows them)"
    )


def test_a_narrow_column_dropped_early_comes_back_when_a_wide_one_dropped_later_made_room() -> None:
    long_job = (ROW[0], "monthly-credits-for-the-enterprise-customers", *ROW[2:])
    fitted = fit(HEADERS, [long_job], 80, DROP, shortenable="error")
    assert [HEADERS[i] for i in fitted.shown] == ["run id", "period", "shard", "trigger", "status"]


def test_a_wide_terminal_shows_everything_and_says_nothing() -> None:
    fitted = fit(HEADERS, [ROW], 200, DROP, shortenable="error")
    assert fitted.shown == list(range(len(HEADERS)))
    assert fitted.note(200) is None


def test_a_long_error_is_cut_short_rather_than_dropped_when_enough_of_it_fits() -> None:
    failed = (*ROW[:5], "failed", *ROW[6:8], "could not connect to server: connection refused " * 3)
    fitted = fit(HEADERS, [failed], 160, DROP, shortenable="error")
    assert HEADERS.index("error") in fitted.shown
    assert fitted.shortened_to is not None
    assert fitted.shortened_to >= MIN_SHORTENED
    assert _width(fitted, natural_widths(HEADERS, [failed])) == 160


@given(
    width=st.integers(min_value=40, max_value=240),
    cells=st.lists(st.text(alphabet="abc-0123 ", max_size=60), min_size=len(HEADERS), max_size=len(HEADERS)),
)
def test_what_is_shown_always_fits_unless_only_the_never_dropped_column_is_left(width: int, cells: list[str]) -> None:
    rows = [ROW, tuple(cells)]
    fitted = fit(HEADERS, rows, width, DROP, shortenable="error")
    widths = natural_widths(HEADERS, rows)
    assert 0 in fitted.shown  # the run id is never dropped
    assert fitted.shown == sorted(fitted.shown)
    assert _width(fitted, widths) <= width or fitted.shown == [0]
    assert set(fitted.dropped) == {HEADERS[i] for i in range(len(HEADERS)) if i not in fitted.shown}
