"""`faregate reconcile` and `faregate sync-limits`, behind the CLI's argument parsing."""

from __future__ import annotations

import asyncio
import sys
from datetime import date, datetime, timedelta, timezone

from faregate.storage import Ledger

from .._config import Settings
from . import _backstop as backstop
from ._api import ProviderApi, ProviderError
from ._gather import reconcile_days
from ._reconcile import failing
from ._render import render

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_DRIFT = 3
DEFAULT_DAYS = 7


def day_range(date_from: str | None, date_to: str | None, today: date) -> tuple[date, date]:
    """`--from`/`--to` (inclusive UTC days); by default the 7 days before today."""
    try:
        last = date.fromisoformat(date_to) if date_to else today - timedelta(days=1)
        first = date.fromisoformat(date_from) if date_from else last - timedelta(
            days=DEFAULT_DAYS - 1)
    except ValueError:
        raise ValueError("--from and --to are dates like 2026-11-01") from None
    if first > last:
        raise ValueError("--from must be on or before --to")
    if (last - first).days > 366:
        raise ValueError("at most 367 days at once")
    return first, last


def _fail(message: str, code: int) -> int:
    print(f"faregate: {message}", file=sys.stderr)
    return code


def reconcile_command(settings: Settings, date_from: str | None, date_to: str | None,
                      grouping: str, fmt: str) -> int:
    """Print the ledger beside the provider's costs; exit 3 past the tolerance."""
    from .._runtime import Runtime

    try:
        first, last = day_range(date_from, date_to, datetime.now(timezone.utc).date())
        api = ProviderApi.from_settings(settings)
    except (ValueError, ProviderError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    prices = Runtime.build(settings).prices

    async def run():
        ledger = await Ledger.open(settings.storage.url)
        try:
            outcome = await reconcile_days(settings, prices, ledger, api, first, last, grouping)
            await ledger.save_reconciliations(outcome.rows)
            return outcome
        finally:
            await api.close()
            await ledger.close()

    try:
        outcome = asyncio.run(run())
    except ProviderError as exc:
        return _fail(str(exc), EXIT_FAILED)
    tolerance = settings.provider.drift_tolerance
    print(render(outcome.rows, fmt, grouping, tolerance, outcome.labels))
    return EXIT_DRIFT if failing(outcome.rows) else 0


def sync_limits_command(settings: Settings, apply: bool) -> int:
    """Show (or with `apply`, make) the provider-side hard limits of mapped projects."""
    try:
        api = ProviderApi.from_settings(settings)
    except ProviderError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    wanted = backstop.backstops(settings)

    async def run():
        ledger = await Ledger.open(settings.storage.url) if apply else None
        try:
            plans = await backstop.plan(api, wanted)
            changes = await backstop.apply(api, plans, ledger.record) if ledger else []
            return plans, changes
        finally:
            await api.close()
            if ledger is not None:
                await ledger.close()

    try:
        plans, changes = asyncio.run(run())
    except ProviderError as exc:
        return _fail(str(exc), EXIT_FAILED)
    print(backstop.render_plans(plans, applied=apply))
    if not apply and any(p.changes for p in plans):
        print("dry run: nothing was changed; pass --apply to set these limits")
    return EXIT_FAILED if any(c.result == "failed" for c in changes) else 0
