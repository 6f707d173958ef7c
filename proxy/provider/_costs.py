"""The provider's daily costs, read exactly from the Admin API's answer.

`GET /organization/costs` answers pages of daily buckets; each result has an
`amount` (a JSON number in USD) and, per the grouping asked for, a
`project_id`, `api_key_id` or `line_item`. The official SDK's typed model
reads amounts as floats, so the page is read from its raw text with
`Decimal` numbers instead and every amount becomes integer nano-USD. The
answer is external input: its shape is checked and bounded, and a result
faregate cannot read is counted, never guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation

from faregate.pricing import to_nanos

MAX_NAME = 256
MAX_USD = Decimal("1e12")


class CostsUnreadable(ValueError):
    """The costs answer is not the documented shape."""


@dataclass(frozen=True, slots=True)
class CostLine:
    """One day's cost of one group, as the provider billed it."""

    day: date
    nanos: int
    project: str | None = None
    api_key: str | None = None
    line_item: str | None = None


@dataclass(frozen=True, slots=True)
class CostsPage:
    lines: tuple[CostLine, ...]
    next_page: str | None  # the cursor of the next page, None on the last one
    skipped: int = 0  # results faregate could not read (other currency, bad amount)


def _name(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME:
        return value
    return None


def _amount(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        return None
    try:
        amount = Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() and abs(amount) < MAX_USD else None


def _day(bucket: dict) -> date:
    start = bucket.get("start_time")
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < 2**40:
        raise CostsUnreadable("a bucket has no start_time")
    return datetime.fromtimestamp(start, timezone.utc).date()


def _line(day: date, result: object) -> CostLine | None:
    if not isinstance(result, dict) or result.get("object") != "organization.costs.result":
        return None
    amount = result.get("amount")
    if not isinstance(amount, dict):
        return None
    currency = amount.get("currency")
    value = _amount(amount.get("value"))
    if value is None or (currency is not None and str(currency).lower() != "usd"):
        return None
    return CostLine(day, to_nanos(value), _name(result.get("project_id")),
                    _name(result.get("api_key_id")), _name(result.get("line_item")))


def parse_costs_page(text: str) -> CostsPage:
    """One page of `GET /organization/costs`, amounts exact."""
    try:
        body = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise CostsUnreadable(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise CostsUnreadable("no data list")
    lines: list[CostLine] = []
    skipped = 0
    for bucket in body["data"]:
        if not isinstance(bucket, dict):
            raise CostsUnreadable("a bucket is not an object")
        day = _day(bucket)
        results = bucket.get("results", bucket.get("result", []))
        if not isinstance(results, list):
            raise CostsUnreadable("a bucket has no results list")
        for result in results:
            line = _line(day, result)
            if line is None:
                skipped += 1
            else:
                lines.append(line)
    cursor = body.get("next_page")
    more = body.get("has_more") is True and isinstance(cursor, str) and 0 < len(cursor) <= 1024
    return CostsPage(tuple(lines), cursor if more else None, skipped)
