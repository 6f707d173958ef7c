"""What enforcing limits costs one call, in process: this build and another, one run.

    python -m bench.admission [--baseline FAREGATE_EXE] [--calls N] [--json FILE]

Times the admission path of a non-streaming chat call for a tenant far from
its limits (a daily and a monthly budget, a request cap, rpm and tpm): the
estimate the call is reserved at, pricing it, admitting it against the
limits, and settling it to its real charge — everything the quota adds to a
call, without the network. Each figure is the best of five runs of `--calls`
calls. With `--baseline`, the same is measured with that build's Python (the
`python` next to its `faregate` script), so one run shows before and after,
alternated for `--rounds` rounds (the best of each build is kept: on a busy
machine, the least disturbed); a build without reservations and worst cases is
timed on its own API.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import timeit
from datetime import datetime, timezone
from pathlib import Path

REQUEST = (b'{"model":"gpt-4o-mini","max_tokens":20,"user":"bench-user","messages":['
           b'{"role":"system","content":"You are a terse assistant."},{"role":"user",'
           b'"content":"Say hello to the benchmark in five words."}]}')
LIMITS = {"daily_usd": "100000", "monthly_usd": "1000000", "max_requests_per_day": 10**8,
          "rpm": 10**7, "tpm": 10**9}
CALLS = 20_000


def admission_step():
    """The admission path of one call, as a no-argument callable (either API)."""
    import orjson

    from faregate.proxy import Metrics, Runtime, parse_settings
    from faregate.proxy.caller import Caller
    from faregate.proxy import meter, quota as q

    runtime = Runtime.build(parse_settings({"tenants": {"default": LIMITS}}))
    table, now = runtime.prices, datetime.now(timezone.utc)
    policy = runtime.policy(Caller("default", "bench-user", None, None, None))
    quota = q.Quota(Metrics(), lambda *_: None)
    endpoint = meter.classify("POST", "/v1/chat/completions")
    body = orjson.loads(REQUEST)
    facts = meter.facts_from_json(endpoint, body, len(REQUEST))
    if hasattr(meter, "estimate"):  # reservations with worst cases
        def step():
            shape = meter.input_shape("chat", body)
            est = meter.estimate(endpoint, facts, body, table=table, at=now, shape=shape,
                                 factor=quota.ratios.factor(("default", "gpt-4o-mini", False)))
            amount = meter.cost_nanos(est.usage, "gpt-4o-mini", table, now)
            worst = meter.worst_nanos(est.worst, "gpt-4o-mini", table, now)
            admission = quota.admit(policy, q.Ask(amount, worst, "gpt-4o-mini",
                                                  tpm_tokens=est.tpm_tokens), now)
            quota.settle(admission, amount // 2, now, 30)
        return step

    def old_step():
        usage, tpm = meter.worst_case(endpoint, facts, body, 4096, table, now)
        amount = meter.cost_nanos(usage, "gpt-4o-mini", table, now)
        admission = quota.admit(policy, amount, now, model="gpt-4o-mini", tpm_tokens=tpm)
        quota.settle(admission, amount // 2, now, 30)
    return old_step


def measure(calls: int) -> float:
    """µs per call, best of five."""
    step = admission_step()
    return round(min(timeit.repeat(step, number=calls, repeat=5)) / calls * 1e6, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", help="another build's `faregate` executable")
    p.add_argument("--calls", type=int, default=CALLS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(measure(args.calls))
        return
    this, base = [], []
    for _ in range(max(1, args.rounds)):
        this.append(measure(args.calls))
        if args.baseline:
            python = Path(args.baseline).with_name("python")
            out = subprocess.run([str(python), __file__, "--one", "--calls", str(args.calls)],
                                 capture_output=True, text=True, check=True, timeout=600,
                                 cwd="/")
            base.append(float(out.stdout.strip().splitlines()[-1]))
    figures = {"this_us": min(this)}
    if base:
        figures["baseline_us"] = min(base)
        figures["added_us"] = round(figures["this_us"] - figures["baseline_us"], 2)
    for name, value in figures.items():
        print(f"{value:8.2f} µs  admission path, tenant far from its limits: {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.exit(main())
