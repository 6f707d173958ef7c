"""What metering costs per call, step by step, in one process (no network).

    python -m bench.steps [--json FILE]

Times each step faregate adds to a non-streaming chat call, on the bodies
the bench's fake upstream sends: reading the request, its input's shape,
the reservation and worst case, admission against a budget far from its
limit and its settlement, the usage scan, pricing, the ledger record and its
journal line, the Prometheus counters, the `x-faregate-budget-*` answer
headers (three budgets, including reading the clock) and the start marker
journaled before the call goes upstream (its row, line and `write(2)`).
Each figure is the best of five runs of
20,000 calls, so it is the cost with warm caches: inside a loaded server the
same work takes about 2–3× longer (bench/README.md, "Why some targets are
missed"). Nothing here is timed in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import timeit
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import orjson

from faregate.pricing import find_usage, load_price_table, price, usage_for_endpoint
from faregate.proxy import Metrics, Runtime, Settings, parse_settings
from faregate.proxy._ids import new_request_id
from faregate.proxy.caller import Caller
from faregate.proxy.quota import BudgetBook, BudgetLimit, budget_headers
from faregate.proxy.meter import (
    Biller,
    Flow,
    charge_record,
    classify,
    cost_nanos,
    estimate,
    facts_from_json,
    input_shape,
    observe,
)
from faregate.proxy.quota import Admission, Ask, Quota
from faregate.proxy.quota._budget import Hold
from faregate.storage._journal import encode_entry
from faregate.storage._markers import marker_row
from faregate.storage import ObjectRecord
from faregate.storage._kinds import CHARGES, OBJECTS
from faregate.storage._record import new_id

REQUEST = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
RESPONSE = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,'
    b'"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0,'
    b'"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}},'
    b'"service_tier":"default","system_fingerprint":"fp_1"}'
)
CALLS = 20_000


def steps(journal: Path) -> dict[str, Callable[[], object]]:
    """The steps of one metered call, each a no-argument callable."""
    table, metrics = load_price_table(), Metrics()
    runtime = Runtime.build(Settings())
    endpoint = classify("POST", "/v1/chat/completions")
    assert endpoint is not None
    now = datetime.now(timezone.utc)
    body = orjson.loads(REQUEST)
    facts = facts_from_json(endpoint, body, len(REQUEST))
    reported = find_usage(RESPONSE)
    usage = usage_for_endpoint("chat", reported, table=table)
    served = "gpt-4o-mini-2024-07-18"
    charge = price(usage, served, now, table)
    flow = Flow("POST", endpoint.path, endpoint)
    flow.caller = Caller("acme", "ana", None, "k_0123456789ab", None)
    flow.status, flow.facts, flow.reading.model = 200, facts, served

    def ledger_record():
        return charge_record(
            charge, flow.caller, model=served, endpoint=endpoint.path, status=200, at=now,
            request_id=flow.request_id, latency_ms=round(flow.elapsed_ms(), 3), tags=flow.tags)

    record = ledger_record()
    row = CHARGES.to_row(record)
    line = encode_entry("charge", 0, row)
    shape = input_shape("chat", body)
    est = estimate(endpoint, facts, body, table=table, at=now, shape=shape)
    amount = cost_nanos(est.usage, "gpt-4o-mini", table, now)
    worst = cost_nanos(est.worst, "gpt-4o-mini", table, now)
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    book = BudgetBook()  # a tenant with a daily and a monthly budget, a user with a daily one
    budgets = tuple((limit, book.counter(limit.scope, limit.period, now)) for limit in (
        BudgetLimit("tenant:acme", "day", 10**9), BudgetLimit("tenant:acme", "month", 10**10),
        BudgetLimit("user:acme/ana", "day", 10**8)))
    admission = Admission(None, Hold(amount=worst), reserved_usage=est.worst)  # type: ignore[arg-type]
    biller = Biller(lambda: runtime, lambda rec: None, metrics, None, None,  # type: ignore[arg-type]
                    journal=_Marks(fd))

    def start_marker():
        flow.admission = admission
        biller.start(flow)
    return {
        "request JSON parse": lambda: orjson.loads(REQUEST),
        "request facts": lambda: facts_from_json(endpoint, body, len(REQUEST)),
        "input shape": lambda: input_shape("chat", body),
        "estimate (reservation + worst case)": lambda: estimate(
            endpoint, facts, body, table=table, at=now, shape=shape),
        "reservation cost": lambda: cost_nanos(est.usage, "gpt-4o-mini", table, now),
        "worst case cost": lambda: cost_nanos(est.worst, "gpt-4o-mini", table, now),
        "admit + settle (budget far from its limit)": admit_and_settle(amount, worst, now),
        "find usage in the body": lambda: find_usage(RESPONSE),
        "normalise usage": lambda: usage_for_endpoint("chat", reported, table=table),
        "price()": lambda: price(usage, served, now, table),
        "ledger record": ledger_record,
        "ledger row": lambda: CHARGES.to_row(record),
        "journal line": lambda: encode_entry("charge", 0, row),
        "journal write": lambda: os.write(fd, line),
        "metrics": lambda: observe(metrics, flow, charge, None),
        "budget headers": lambda: budget_headers(budgets, time.time()),
        "start marker (record, row, line, write)": start_marker,
        "object owner (record, row, line)": lambda: encode_entry(
            "object", 0, OBJECTS.to_row(ObjectRecord(
                id="resp_0123456789abcdef", kind="response", tenant="acme", user="ana",
                key_id="k_0123456789ab"))),
        "request id + flow": lambda: Flow("POST", endpoint.path, endpoint),
        "record id": new_id,
        "request id": new_request_id,
    }


def best_of_five(fns: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """µs per call of each step: the best of five runs of `calls` calls."""
    return {name: round(min(timeit.repeat(fn, number=calls, repeat=5)) / calls * 1e6, 2)
            for name, fn in fns.items()}


def show(figures: dict[str, float]) -> float:
    """Print one figure per line and the total; return the total."""
    for name, us in figures.items():
        print(f"{us:8.2f} µs  {name}")
    total = round(sum(figures.values()), 2)
    print(f"{total:8.2f} µs  total")
    return total


class _Marks:
    """The ledger's `mark()` as it runs: the marker's row, its journal line, one write."""

    accepting = True

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def mark(self, rec) -> bool:
        os.write(self.fd, encode_entry("start", 0, marker_row(rec)))
        return True

    def unmark(self, charge_id: str) -> None:
        pass
def admit_and_settle(amount: int, worst: int, now: datetime) -> Callable[[], object]:
    """One call through a tenant's day and month budgets, far from their limits."""
    settings = parse_settings({"tenants": {"acme": {"daily_usd": "100000",
                                                    "monthly_usd": "1000000"}}})
    runtime = Runtime.build(settings)
    policy = runtime.policy(Caller("acme", None, None, None, None))
    quota = Quota(Metrics(), lambda policy, budgets, now: None)
    ask = Ask(amount, worst, "gpt-4o-mini", tpm_tokens=60)

    def step():
        admission = quota.admit(policy, ask, now)
        quota.settle(admission, amount // 2, now, 30)  # type: ignore[arg-type]
    return step


def measure(calls: int = CALLS) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="faregate-steps-") as tmp:
        return best_of_five(steps(Path(tmp) / "journal"), calls)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the figures (µs per call) as JSON here")
    p.add_argument("--calls", type=int, default=CALLS, help="calls per timing (best of 5)")
    args = p.parse_args()
    figures = measure(max(1, args.calls))
    show(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
