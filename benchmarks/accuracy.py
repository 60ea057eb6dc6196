"""The context benchmark's accuracy targets (issue 15), judged on every row of its summary.

Every row of the word-timestamp behaviour (all runs, and each value of each dimension) must
meet all four: the words recorded minus the words heard, absolute, at most ``ABS_DIFF_P95`` at
the 95th percentile and ``ABS_DIFF_MAX`` at worst; no barge-in recording a sentence that had not
started playing; every uninterrupted reply recorded exactly. Plain data in, plain data out, so
that the report can judge a results file as well as the run that wrote it.
"""

from __future__ import annotations

from typing import Any

BEHAVIOUR = "new"
"""The behaviour the targets are for: word timestamps."""
ABS_DIFF_P95 = 1
ABS_DIFF_MAX = 2
UNSTARTED_PCT = 0.0
EXACT_PCT = 100.0
GOALS = {
    "abs_p95": f"abs diff p95 <= {ABS_DIFF_P95}",
    "abs_max": f"abs diff max <= {ABS_DIFF_MAX}",
    "unstarted": f"unstarted sentence recorded {UNSTARTED_PCT:g} %",
    "exact": f"uninterrupted exact {EXACT_PCT:g} %",
}


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def verdict(row: dict[str, Any]) -> dict[str, Any]:
    """One summary row judged: each check True, False, or None when the row has no run to
    judge it on (no uninterrupted reply, say). A row passes when it has barge-ins and no check
    is False; ``missed`` names the checks that failed, or says there was nothing to judge."""
    checks = {
        "abs_p95": _at_most(row["abs_diff"]["p95"], ABS_DIFF_P95),
        "abs_max": _at_most(row["abs_diff"]["max"], ABS_DIFF_MAX),
        "unstarted": _at_most(row["unstarted_pct"], UNSTARTED_PCT),
        "exact": None if row["exact_pct"] is None else row["exact_pct"] >= EXACT_PCT,
    }
    missed = [GOALS[name] for name, ok in checks.items() if ok is False]
    if not row["barge_ins"]:
        missed.append("no barge-ins to judge")
    return {
        "dimension": row["dimension"],
        "value": row["value"],
        "checks": checks,
        "passed": not missed,
        "missed": missed,
    }


def verdicts(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verdict of every row of the word-timestamp behaviour, in the summary's order."""
    return [verdict(row) for row in summary if row["behaviour"] == BEHAVIOUR]
