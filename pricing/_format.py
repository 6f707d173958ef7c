"""The price table as aligned text, for `faregate prices [--model NAME]`."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

from ._period import RATE_KEYS, Price
from ._table import PriceTable

_SHORT = {
    "input": "input",
    "cached_input": "cached",
    "output": "output",
    "audio_input": "audio_in",
    "cached_audio_input": "audio_cached",
    "audio_output": "audio_out",
    "image_input": "image_in",
    "cached_image_input": "image_cached",
    "image_output": "image_out",
    "per_second": "per_second",
    "per_minute": "per_minute",
    "per_1k_chars": "per_1k_chars",
    "per_image": "per_image",
    "cache_write": "cache_write",
    "cache_write_12h": "cache_write_12h",
    "standby_per_minute": "standby_per_min",
}


def table_heading(table: PriceTable, today: date) -> str:
    """`price table V (shipped table D, N days old)`: what priced calls, and how fresh."""
    age = table.age_days(today)
    shipped = f"shipped table {table.shipped_version}"
    if age is not None:
        shipped += f", {age} day{'s' if age != 1 else ''} old"
    return f"price table {table.version} ({shipped})"


def format_price_table(
    table: PriceTable, model: str | None = None, at: datetime | None = None
) -> str:
    """Aligned text: one row per family (rates in force at `at`, default now).

    With `model`, only its family, every dated period of it and its per-image
    variants. Token rates are USD per 1M tokens; `per_*` columns per unit.
    Retired models are marked `(retired D)`, unconfirmed periods `?`.
    """
    today = (at or datetime.now(timezone.utc)).date()
    head = (f"{table_heading(table, today)}\n"
            "USD per 1M tokens; per_* columns per unit; ? = unconfirmed")
    if model is not None:
        family = table.resolve(model)
        if family is None:
            return f"{head}\nno price for model {model!r}: calls are recorded unpriced\n"
        rows = list(table.periods[family])
        current = table.entry(model, at)
        lines = [head]
        if family != model.strip().lower():
            lines.append(f"{model} is priced as {family}")
        lines.append(_grid(rows, mark=current, table=table))
        lines.append("(* = in force)")
        if current is not None and (current.context_window or current.max_output_tokens):
            lines.append(f"limits: context window {current.context_window or '-'}, "
                         f"max output tokens {current.max_output_tokens or '-'}")
        retired = table.retired_on(model)
        if retired is not None:
            lines.append(f"retired {retired.isoformat()}: no longer served; kept to price "
                         "old records")
        for period in rows:
            for tier, rates in period.tiers.items():
                parts = ", ".join(f"{_SHORT[k]} {_money(v)}" for k, v in rates.items())
                lines.append(f"{tier} tier ({_date(period)}): {parts}")
            if period.long_context is not None:
                rule = period.long_context
                parts = ", ".join(f"{_SHORT[k]} x{_money(v)}" for k, v in rule.factors.items())
                lines.append(f"long context ({_date(period)}): above {rule.above:,} prompt "
                             f"tokens, {parts}")
            if period.per_image_variants:
                lines.append(f"per-image variants ({_date(period)}):")
                width = max(len(k) for k in period.per_image_variants)
                for key, value in period.per_image_variants.items():
                    lines.append(f"  {key.ljust(width)}  {_money(value)}")
        return "\n".join(lines) + "\n"
    rows = [p for f in sorted(table.periods) if (p := table.entry(f, at)) is not None]
    return f"{head}\n{_grid(rows, table=table)}\n{_tools(table, at)}"


def _tools(table: PriceTable, at: datetime | None) -> str:
    if not table.tools:
        return ""
    lines = ["built-in tool fees (USD per call; code_interpreter per container)"]
    for name in sorted(table.tools):
        fee = table.tool(name, at)
        if fee is None:
            continue
        parts = [_money(fee.per_call)] if fee.per_call is not None else []
        parts += [f"{k} {_money(v)}" for k, v in fee.variants.items()]
        parts += [f"{k} {_money(v)}" for k, v in fee.by_model.items()]
        lines.append(f"  {name}: {', '.join(parts)}  "
                     f"({fee.effective.isoformat() if fee.effective else 'config'}, {fee.source})")
    return "\n".join(lines) + "\n"


def _grid(rows: list[Price], mark: Price | None = None, table: PriceTable | None = None) -> str:
    used = [k for k in RATE_KEYS if any(k in p.rates for p in rows)]
    header = ["model", *(_SHORT[k] for k in used), "tiers", "effective", "source"]
    body = []
    for p in rows:
        name = p.family + ("?" if p.unconfirmed else "")
        name += " *" if mark is not None and p is mark else ""
        retired = table.retired.get(p.family) if table is not None else None
        if retired is not None and mark is None:
            name += f" (retired {retired[0].isoformat()})"
        rates = [_money(p.rates[k]) if k in p.rates else "-" for k in used]
        tiers = ",".join([*p.tiers, *(["long"] if p.long_context else [])]) or "-"
        body.append([name, *rates, tiers, _date(p), p.source])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    numeric = range(1, 1 + len(used))
    out = []
    for r in [header, *body]:
        cells = [
            r[i].rjust(widths[i]) if i in numeric else r[i].ljust(widths[i])
            for i in range(len(r))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _date(p: Price) -> str:
    return p.effective.isoformat() if p.effective else "config"


def _money(value: Decimal) -> str:
    """At least two decimals, no exponent, no trailing noise: 2.50, 0.075, 10.00."""
    v = value.normalize()
    if v.as_tuple().exponent > -2:  # type: ignore[operator]
        v = v.quantize(Decimal("0.01"))
    return format(v, "f")


def override_snippet(model: str) -> str:
    """The config lines that price `model` (rates to fill in): what to add when a
    model resolves to no price. USD per 1M tokens, as `[pricing.models]` reads them."""
    name = model.replace("\\", "\\\\").replace('"', '\\"')
    name = "".join(c if c.isprintable() else "?" for c in name)[:128]
    return (f'[pricing.models."{name}"]\n'
            "input = 0.00   # USD per 1M input tokens: fill in the model's price\n"
            "output = 0.00  # USD per 1M output tokens")
