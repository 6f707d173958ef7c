"""`faregate prices`: the price table in force, checked and compared, and the
warning `serve` gives when the shipped table is old."""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timezone
from typing import Callable

from ._config import Settings

EXIT_CONFIG = 2
#: `serve` warns when the shipped price table is older than this.
STALE_TABLE_DAYS = 60
#: A community table larger than this is refused by `prices --compare`.
MAX_COMPARE_BYTES = 64 * 1024 * 1024


def stale_table_warning(today: date) -> str | None:
    """A warning when the shipped price table is older than STALE_TABLE_DAYS."""
    from faregate.pricing import load_price_table

    table = load_price_table()
    age = table.age_days(today)
    if age is None or age <= STALE_TABLE_DAYS:
        return None
    return (f"the shipped price table {table.version} is {age} days old: prices may have "
            "changed since; compare it (faregate prices --compare FILE) and add a newer "
            "price file with [pricing] table = \"PATH\"")


def warn_if_stale() -> None:
    """Log and print the stale-table warning, if any."""
    import logging

    warning = stale_table_warning(datetime.now(timezone.utc).date())
    if warning:
        logging.getLogger("faregate.pricing").warning(warning)
        print(f"faregate: warning: {warning}", file=sys.stderr, flush=True)


def prices_command(args: argparse.Namespace, settings: Callable[[], Settings]) -> int:
    """`faregate prices`: the table in force (`settings()`: the config's), checked,
    compared, or an operator's price file checked on its own."""
    from faregate.pricing import format_price_table

    from ._runtime import Runtime

    if isinstance(args.check, str):
        return _check_price_file(args.check)
    table = Runtime.build(settings()).prices
    if args.compare:
        return _compare(table, args.compare, args.at)
    if args.check:
        return _report_check(table)
    print(format_price_table(table, args.model, args.at))
    return 0


def _report_check(table, problems: list[str] | None = None) -> int:
    """Print the table's problems and unconfirmed periods; exit 2 on problems."""
    from faregate.pricing import check_price_table, describe_price_table, unconfirmed_periods

    problems = check_price_table(table) if problems is None else problems
    print(describe_price_table(table))
    for line in problems:
        print(f"  {line}")
    unconfirmed = unconfirmed_periods(table)
    if unconfirmed:
        print(f"{len(unconfirmed)} unconfirmed period(s): figures no source confirms, or "
              "that sources dispute (see the comments in the file):")
        for line in unconfirmed:
            print(f"  {line}")
    print(f"{len(problems)} problem(s)" if problems else "ok")
    return 2 if problems else 0


def _check_price_file(path: str) -> int:
    """`prices --check PATH`: an operator's price file, read over the shipped table."""
    from faregate.pricing import PriceTableError, load_price_table

    from ._runtime import read_price_file

    try:
        table = read_price_file(path, load_price_table(), check=False)
    except PriceTableError as exc:
        print(f"{path}: {exc}")
        print("1 problem(s)")
        return 2
    print(f"{path}: read over the shipped table")
    return _report_check(table)


def _compare(table, path: str, at: datetime | None) -> int:
    """`prices --compare FILE`: every difference with a LiteLLM-format table;
    exit 2 when a model it prices has no price here."""
    import orjson

    from faregate.pricing import compare_prices

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_COMPARE_BYTES + 1)
        if len(raw) > MAX_COMPARE_BYTES:
            raise ValueError(f"larger than {MAX_COMPARE_BYTES} bytes")
        result = compare_prices(orjson.loads(raw), table, at)
    except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        print(f"faregate prices --compare: {path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path} against price table {table.version}")
    for line in result.lines():
        print(line)
    return 2 if result.missing else 0
