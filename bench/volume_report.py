"""bench/volume.py's results as a projection and as a section of bench/RESULTS.md.

The section sits between two markers and is replaced on the next run; any
text outside them (other benchmarks, notes added by hand) is kept.
"""

from __future__ import annotations

from typing import Any

START = "<!-- ledger-volume:start -->"
END = "<!-- ledger-volume:end -->"
RATES = (10, 100, 1_000)
SESSION_SHARE = 0.05  # of the generated charges (bench/volume_data.py)
MONTH_S = 30 * 86_400
DATA_DAYS = 31
TARGETS = {"start_s": 2.0, "read_ms": 100.0, "lag_s": 1.0, "latency_ms": 1.0,
           "sqlite_rows_per_s": 20_000, "postgresql_rows_per_s": 30_000}


def _slope(x0: float, y0: float, x1: float, y1: float, noise: float) -> float:
    """Growth of y per unit of x between two measured points; 0 when the
    difference is within the measurement's own spread (or negative): a
    straight line through noise would project noise."""
    if x1 == x0 or y1 - y0 <= noise:
        return 0.0
    return (y1 - y0) / (x1 - x0)


def projection(results: dict) -> dict:
    """Start, a 30-day query and disk per month of charges at 10/100/1,000 calls/s.

    Straight lines through the two measured sizes (the 1M upgrade ledger and
    the big one), from the big one: a slope counts only where the two differ
    by more than the spread of the runs. Reads depend on the rollup rows in
    the range (distinct tenants, users, … times months and days), not on the
    number of charges, so with the same callers they stay flat.
    """
    out: dict[str, Any] = {}
    for backend, big in results.get("backends", {}).items():
        small = results.get("upgrade", {}).get(backend)
        if not small:
            continue
        rows = big["rows"]
        runs = big["start_s"]["runs"]
        b_start = _slope(small["rows"], small["start_s"], rows, big["start_s"]["median"],
                         max(runs) - min(runs))
        q_small, q_big = small["usage_30d_tenant"], big["reads"]["usage_30d_tenant"]
        b_q = _slope(small["rows"], q_small["median"], rows, q_big["median"],
                     max(q_small["p95"] - q_small["median"], q_big["p95"] - q_big["median"]))
        d = big["disk"]
        roll = d["rollup_bytes"] or 0
        per_charge = (d["bytes"] - roll) / rows
        roll_per_day = roll / DATA_DAYS
        out[backend] = {"bytes_per_charge": round(per_charge), "rollup_bytes_per_day":
                        round(roll_per_day), "start_s_slope_per_million": round(b_start * 1e6, 4),
                        "query_ms_slope_per_million": round(b_q * 1e6, 4), "rates": {}}
        # SQLite's start-up session rebuild reads one day of session charges: it grows
        # with the rate (SESSION_SHARE of the charges are Realtime responses, as in the
        # data). A serving PostgreSQL ledger runs it in its upkeep task, not at start.
        ip = big.get("in_process", {}) if backend == "sqlite" else {}
        entries = max(1, ip.get("rebuild_window_entries", 0))
        per_entry_s = ip.get("rebuild_ms", {}).get("median", 0.0) / 1000 / entries
        out[backend]["rebuild_us_per_session_charge"] = round(per_entry_s * 1e6, 3)
        for rate in RATES:
            month = rate * MONTH_S
            rebuild = per_entry_s * (rate * 86_400 * SESSION_SHARE - entries)
            out[backend]["rates"][rate] = {
                "charges_per_month": month,
                "start_s": round(big["start_s"]["median"] + b_start * (month - rows)
                                 + max(0.0, rebuild), 2),
                "query_30d_ms": round(q_big["median"] + b_q * (month - rows), 1),
                "disk_gb_per_month": round((per_charge * month + roll_per_day * 30) / 1e9, 2),
            }
    return out


def _v(ok: bool | None) -> str:
    return "—" if ok is None else ("MET" if ok else "MISSED")


def _ms(d: dict | None, key: str = "median") -> str:
    return "—" if not d else f"{d[key]:,.1f} ms"


def _targets(results: dict) -> list[str]:
    b = results["backends"]
    s, p = b.get("sqlite", {}), b.get("postgresql", {})
    rows = ["| target (issue #21) | SQLite | PostgreSQL | verdict |", "|---|---|---|---|"]

    def row(name: str, fmt, value, limit: float, higher: bool = False) -> None:
        vals = [value(x) if x else None for x in (s, p)]
        ok = None if None in vals else all((v >= limit) if higher else (v <= limit) for v in vals)
        rows.append(f"| {name} | {fmt(vals[0])} | {fmt(vals[1])} | {_v(ok)} |")

    sec = lambda v: "—" if v is None else f"{v:.2f} s"  # noqa: E731
    ms = lambda v: "—" if v is None else f"{v:,.1f} ms"  # noqa: E731
    row("start to `/readyz` 200 ≤ 2 s", sec, lambda x: x["start_s"]["median"], 2.0)
    for key, name in (("usage_month_tenant", "`/admin/usage` this month by tenant"),
                      ("usage_30d_tenant", "`/admin/usage` 30 whole days by tenant"),
                      ("usage_30d_user", "`/admin/usage` 30 whole days by user"),
                      ("budgets", "`/admin/budgets`"),
                      ("dashboard", "dashboard full refresh (as the page asks)"),
                      ("dashboard_30d", "dashboard full refresh, month = 30 whole days")):
        row(f"{name} ≤ 100 ms", ms, lambda x, k=key: x["reads"][k]["median"], 100.0)
    row("`faregate report --period month` (new process) ≤ 100 ms", ms,
        lambda x: x["cli"]["report_month"]["median"], 100.0)
    row("`faregate report` 30 days: open + query + render in process ≤ 100 ms", ms,
        lambda x: x["in_process"]["report_30d_ms"]["median"], 100.0)
    row("ledger lag p99 during 10 dashboard refreshes ≤ 1 s", sec,
        lambda x: x["lag"]["dashboard"]["lag_p99_s"], 1.0)
    row("call latency p99: dashboard blocks − quiet blocks ≤ 1 ms", ms,
        lambda x: x["lag"]["dashboard"]["latency_p99_ms"] - x["lag"]["quiet"]["latency_p99_ms"],
        1.0)
    wc = results.get("write_cost", {}).get("rollups", {})
    for backend, limit in (("sqlite", 20_000), ("postgresql", 30_000)):
        got = wc.get(backend, {}).get("rows_per_s")
        cells = [f"{got:,} rows/s" if got else "—", "" ] if backend == "sqlite" else \
            ["", f"{got:,} rows/s" if got else "—"]
        ok = None if got is None else got >= limit
        rows.append(f"| write end to end with rollups ≥ {limit // 1000}k rows/s ({backend}) | "
                    f"{cells[0]} | {cells[1]} | {_v(ok)} |")
    return rows


def _details(results: dict) -> list[str]:
    out = ["| | SQLite | PostgreSQL |", "|---|---|---|"]
    b = results["backends"]

    def line(name: str, get) -> None:
        cells = []
        for backend in ("sqlite", "postgresql"):
            try:
                cells.append(get(b[backend], backend))
            except (KeyError, TypeError):
                cells.append("—")
        out.append(f"| {name} | {cells[0]} | {cells[1]} |")

    line("charges", lambda x, _: f"{x['rows']:,}")
    line("starts (s)", lambda x, _: ", ".join(f"{v:.2f}" for v in x["start_s"]["runs"]))
    for key in ("usage_month_tenant", "usage_30d_tenant", "usage_30d_user", "budgets",
                "dashboard", "dashboard_30d"):
        line(f"{key} median / p95", lambda x, _, k=key:
             f"{x['reads'][k]['median']:.1f} / {x['reads'][k]['p95']:.1f} ms")
    line("report --period month, new process", lambda x, _: _ms(x["cli"]["report_month"]))
    line("report 30 days, new process", lambda x, _: _ms(x["cli"]["report_30d"]))
    line("budget seeding query over 30 days (in process)",
         lambda x, _: _ms(x["in_process"]["seed_30d_ms"]))
    line("start-up session rebuild (session charges in its window)", lambda x, _:
         f"{_ms(x['in_process']['rebuild_ms'])} ({x['in_process']['rebuild_window_entries']:,})")
    for kind in ("quiet", "dashboard"):
        line(f"{kind} blocks: calls, p50 / p99 latency", lambda x, _, k=kind:
             f"{x['lag'][k]['calls']}, {x['lag'][k]['latency_p50_ms']:.2f} / "
             f"{x['lag'][k]['latency_p99_ms']:.2f} ms")
        line(f"{kind} blocks: ledger lag p99 / max", lambda x, _, k=kind:
             f"{x['lag'][k]['lag_p99_s']:.2f} / {x['lag'][k]['lag_max_s']:.2f} s")
    line("disk (database + WAL)", lambda x, _: f"{x['disk']['bytes'] / 1e9:.2f} GB")
    line("rollup rows", lambda x, _: f"{x['disk']['rollup_rows']:,}")
    up = results.get("upgrade", {})
    line("upgrade in place (0011 + 0012), s per million charges",
         lambda x, bk: f"{up[bk]['seconds_per_million']:.1f} s ({up[bk]['rows']:,} charges)")
    line("start on the upgraded ledger", lambda x, bk: f"{up[bk]['start_s']:.2f} s")
    wc = results.get("write_cost", {})
    for name in ("rollups", "baseline"):
        if name in wc:
            line(f"write ({name}): end to end / database side / replay", lambda x, bk, n=name:
                 f"{wc[n][bk]['rows_per_s']:,} / {wc[n][bk]['store_rows_per_s']:,} / "
                 f"{wc[n][bk]['recovery_rows_per_s']:,} rows/s")
    return out


def _projection(results: dict) -> list[str]:
    out = ["| backend | calls/s | charges per month | start | 30-day query | disk per month |",
           "|---|---|---|---|---|---|"]
    for backend, proj in results.get("projection", {}).items():
        out.append(f"| {backend} | slopes | | {proj['start_s_slope_per_million']} s per million"
                   f" | {proj['query_ms_slope_per_million']} ms per million | "
                   f"{proj['bytes_per_charge']} B per charge + "
                   f"{proj['rollup_bytes_per_day'] / 1e3:,.0f} kB of rollups per day |")
        for rate, r in proj["rates"].items():
            out.append(f"| {backend} | {rate:,} | {r['charges_per_month']:,} | {r['start_s']:.2f} s"
                       f" | {r['query_30d_ms']:.1f} ms | {r['disk_gb_per_month']:,.1f} GB |")
    return out


def markdown_section(results: dict, command: str) -> str:
    lines = [START, "## The ledger at volume (issue #21)", "",
             f"`{command}` — {results['started']} to {results['finished']}, "
             f"{results['machine']} (shared with other work).", "",
             *_targets(results), "", "### Details (medians)", "", *_details(results), "",
             "### Projection (straight lines through the measured sizes)", "",
             *_projection(results), "", END]
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str) -> str:
    if START in text and END in text:
        head, rest = text.split(START, 1)
        return head + section.rstrip("\n") + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + section
