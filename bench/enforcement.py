"""What admitting one call costs before it is forwarded, in one process (no network).

    python -m bench.enforcement [--json FILE]

The steps between a request's arrival and its forwarding, on the bench's
chat body: the path check (canonical path), classification, reading the
body (strict JSON), the request facts, the endpoint and unknown-model
checks, the reservation (and worst case) and its price, and the budget hold
(admit + settle).
Run it with another build's Python to compare (the figures of a build that
lacks a step are reported without it): each figure is the best of five runs
of 20,000 calls, warm caches (a loaded server takes 2–3× longer). Nothing
here is timed in the test suite.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import orjson

from faregate.pricing import load_price_table
from faregate.proxy import Metrics, parse_settings
from faregate.proxy.caller import Caller
from faregate.proxy import meter
from faregate.proxy.meter import classify, cost_nanos, facts_from_json
from faregate.proxy.quota import Quota, policy_for

from .steps import best_of_five, show

REQUEST = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
LONG = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 200, "messages": [
    {"role": "user" if i % 2 else "assistant", "content": "a fairly ordinary sentence. " * 20}
    for i in range(40)]})
PATH = "/v1/chat/completions"
CALLS = 20_000


def _path_step() -> tuple[str, Callable[[], object]]:
    try:
        from faregate.proxy.meter import canonical_path
    except ImportError:  # a build before canonical paths: its safe_path check
        from aiohttp.test_utils import make_mocked_request

        from faregate.proxy.rest import safe_path
        request = make_mocked_request("POST", PATH)
        return "path check (safe_path)", lambda: safe_path(request)
    return "canonical path", lambda: canonical_path(PATH)


def _parse_step(body: bytes) -> tuple[str, Callable[[], object]]:
    try:
        from faregate.proxy.meter import strict_json
    except ImportError:
        return "body parse (orjson)", lambda: orjson.loads(body)
    return "body parse (strict)", lambda: strict_json(body)


def steps(body: bytes) -> dict[str, Callable[[], object]]:
    table, metrics = load_price_table(), Metrics()
    settings = parse_settings({"tenants": {"acme": {"monthly_usd": "100",
                                                    "default_max_output_tokens": 256}}})
    caller = Caller("acme", None, None, "k_0123456789ab", None)
    policy = policy_for(settings, caller, table)
    quota = Quota(metrics, lambda *a: None)
    endpoint = classify("POST", PATH)
    assert endpoint is not None
    now = datetime.now(timezone.utc)
    parsed = orjson.loads(body)
    facts = facts_from_json(endpoint, parsed, len(body))
    if hasattr(meter, "estimate"):  # reservations with worst cases (an Ask)
        from faregate.proxy.quota import Ask

        def reservation() -> object:
            return meter.estimate(endpoint, facts, parsed, table=table, at=now,
                                  default_output=256)

        def hold() -> None:
            admission = quota.admit(policy, Ask(1000, 5000, "gpt-4o-mini"), now)
            quota.settle(admission, 900, now)  # type: ignore[arg-type]
        worst = reservation().usage  # type: ignore[attr-defined]
    else:  # a build whose reservation is its worst case
        def reservation() -> object:
            return meter.worst_case(endpoint, facts, parsed, 256, table, now)

        def hold() -> None:
            admission = quota.admit(policy, 1000, now, model="gpt-4o-mini")
            quota.settle(admission, 900, now)  # type: ignore[arg-type]
        worst = reservation()[0]  # type: ignore[index]

    out = dict((_path_step(), ("classify", lambda: classify("POST", PATH)),
                _parse_step(body)))
    out["request facts"] = lambda: facts_from_json(endpoint, parsed, len(body))
    if hasattr(policy, "allows_path"):
        out["endpoints check"] = lambda: policy.allows_path(PATH)
    out["unknown-model check"] = lambda: table.entry("gpt-4o-mini", None)
    out["reservation usage"] = reservation
    out["reservation cost"] = lambda: cost_nanos(worst, "gpt-4o-mini", table, now)
    out["budget hold (admit + settle)"] = hold
    return out


def measure(body: bytes, calls: int = CALLS) -> dict[str, float]:
    return best_of_five(steps(body), calls)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the figures (µs per call) as JSON here")
    p.add_argument("--calls", type=int, default=CALLS)
    args = p.parse_args()
    report = {}
    for label, body in (("short chat body", REQUEST), (f"{len(LONG)}-byte chat body", LONG)):
        print(f"-- {label}")
        figures = measure(body, max(1, args.calls))
        report[label] = {**figures, "total": show(figures)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
