"""`va-cds report overrides` (override analytics) and `va-cds db upgrade` (schema migrations).

Informatics teams tune rules by how often clinicians override them; this prints, per rule id, the
cards shown, how many were accepted or overridden, the override rate, the repeat burden (cards that
repeated an earlier card's evidence fingerprint for the same patient chart, and how many of those alert
memory spared the clinician) and the most common override reasons, as an aligned table and optionally
as CSV for a spreadsheet.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from cds_service.database_url import ensure_folder, unreadable_reason, upgrade_hint
from cds_service.persistence import RuleStats, Store, StoreUnavailable

_CSV_FIELDS = [
    "rule_id",
    "shown",
    "accepted",
    "overridden",
    "accept_rate",
    "override_rate",
    "repeats",
    "repeats_spared",
    *(f"top_reason_{i}{suffix}" for i in (1, 2, 3) for suffix in ("", "_count")),
]


def _since(value: str) -> datetime:
    """ISO date or date-time; a date means its midnight UTC, a naive date-time is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().upper())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _default_url() -> str:
    from cds_service.settings import Settings

    return Settings().database_url


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def format_table(stats: Sequence[RuleStats]) -> str:
    """An aligned plain-text table; numbers right-aligned, reasons as 'label (n)'."""
    header = [
        "rule",
        "shown",
        "accepted",
        "overridden",
        "override rate",
        "repeat burden",
        "top override reasons",
    ]
    rows = [
        [
            s.rule_id,
            str(s.shown),
            str(s.accepted),
            str(s.overridden),
            _percent(s.override_rate),
            f"{s.repeats} ({s.spared} spared)" if s.repeats or s.spared else "-",
            "; ".join(f"{label} ({n})" for label, n in s.top_reasons) or "-",
        ]
        for s in stats
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {1, 2, 3, 4, 5}

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"


def _csv_safe(value: str) -> str:
    # Reasons include clinicians' free-text comments: a leading =, +, - or @ would be run as a
    # formula when the CSV is opened in a spreadsheet (CSV injection). Quote it as text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def write_csv(stats: Sequence[RuleStats], out: TextIO) -> None:
    """CSV with one row per rule; rates as fractions (0-1), empty when nothing was shown."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_FIELDS)
    for s in stats:
        reasons: list[str | int] = []
        for i in range(3):
            label, n = s.top_reasons[i] if i < len(s.top_reasons) else ("", "")
            reasons += [_csv_safe(str(label)), n]
        writer.writerow(
            [
                _csv_safe(s.rule_id),
                s.shown,
                s.accepted,
                s.overridden,
                "" if s.accept_rate is None else f"{s.accept_rate:.4f}",
                "" if s.override_rate is None else f"{s.override_rate:.4f}",
                s.repeats,
                s.spared,
                *reasons,
            ]
        )


def main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """`va-cds report overrides [--since ISO-DATE] [--csv PATH|-] [--database-url URL]`.

    Returns 0 on success, 2 on a usage error, 1 when the database cannot be read.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="va-cds report", description="Reports from the audit database")
    sub = parser.add_subparsers(dest="report", required=True)
    overrides = sub.add_parser(
        "overrides", help="per rule: cards shown, accepted, overridden, repeat burden, top reasons"
    )
    overrides.add_argument(
        "--since", type=_since, help="only cards shown on or after this ISO date/time (UTC)"
    )
    overrides.add_argument("--csv", metavar="PATH", help="also write CSV to PATH ('-' = CSV only, to stdout)")
    overrides.add_argument("--database-url", help="SQLAlchemy URL (default: VA_CDS_DATABASE_URL / settings)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)

    url = args.database_url or _default_url()
    try:
        store = Store(url)
    except ValueError as exc:
        print(f"va-cds report: {exc}", file=stderr)
        return 2
    # Read-only: never create the SQLite file (an empty one would hide the real one next time).
    reason = unreadable_reason(url)
    if reason is not None:
        store.close()
        print(f"va-cds report: {reason}; {upgrade_hint(url)}, or pass --database-url", file=stderr)
        return 1
    try:
        stats = store.override_report(args.since)
    except StoreUnavailable as exc:
        shown = store.url.render_as_string(hide_password=True)
        print(f"va-cds report: cannot read the database at {shown}: {exc}", file=stderr)
        return 1
    finally:
        store.close()

    if args.csv == "-":
        write_csv(stats, stdout)
        return 0
    if not stats:
        print("no cards recorded" + (f" since {args.since.isoformat()}" if args.since else ""), file=stdout)
    else:
        stdout.write(format_table(stats))
    if args.csv:
        buffer = io.StringIO()
        write_csv(stats, buffer)
        with open(args.csv, "w", encoding="utf-8", newline="") as fh:
            fh.write(buffer.getvalue())
        print(f"CSV written to {args.csv}", file=stderr)
    return 0


def db_main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """`va-cds db upgrade [--database-url URL]`: apply migrations up to the newest. 0 on success."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="va-cds db", description="Database schema management")
    sub = parser.add_subparsers(dest="action", required=True)
    upgrade = sub.add_parser("upgrade", help="apply all pending migrations (idempotent)")
    upgrade.add_argument("--database-url", help="SQLAlchemy URL (default: VA_CDS_DATABASE_URL / settings)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    url = args.database_url or _default_url()
    try:
        store = Store(url)
    except ValueError as exc:
        print(f"va-cds db upgrade: {exc}", file=stderr)
        return 2
    try:
        ensure_folder(url)
        store.upgrade()
    except StoreUnavailable as exc:
        print(f"va-cds db upgrade: {exc}", file=stderr)
        return 1
    finally:
        store.close()
    print(f"database schema is up to date ({store.url.render_as_string(hide_password=True)})", file=stdout)
    return 0
