"""Metrics and the report tell one story (README "Metrics").

`faregate_tokens_total{kind}` counts disjoint token classes: `kind="input"` is
uncached text input, cached input has its own kinds; the report's INPUT is
every input kind summed (cached included) and its CACHED the cached kinds.
`faregate_requests_total` counts what the report counts as requests — each
REST call that reached the upstream, each Realtime/Live session once (status
101) — plus faregate's own refusals (model "none", never in the ledger);
free calls (`GET /v1/models`, …) are in neither.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from faregate.pricing import CACHED_CLASSES, INPUT_CLASSES
from test_realtime import fake, live_session, rt_gateway, sessions_of, text_turn  # noqa: F401


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def requests_counted(text: str, **match: str) -> float:
    return sum(v for labels, v in samples(text, "faregate_requests_total")
               if all(labels.get(k) == want for k, want in match.items()))


async def report(gw):
    await gw.state.ledger.flush()
    return await gw.state.ledger.usage(None, None, "tenant")


async def test_input_tokens_agree_with_the_report_on_cached_calls(gateway):
    gw = gateway
    client = gw.client()
    for user in ("cache-hit", "someone", "cache-hit"):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "word " * 40}], user=user)
    await gw.ledger_rows(3)
    text = await gw.metrics_text()
    tokens = {labels["kind"]: v for labels, v in samples(text, "faregate_tokens_total")}
    rep = await report(gw)
    assert tokens["cached_input"] > 0 and rep.rows[0].cached_tokens > 0
    assert sum(tokens.get(k, 0) for k in INPUT_CLASSES) == rep.rows[0].input_tokens
    assert sum(tokens.get(k, 0) for k in CACHED_CLASSES) == rep.rows[0].cached_tokens
    assert tokens["input"] == rep.rows[0].input_tokens - rep.rows[0].cached_tokens
    help_line = next(line for line in text.splitlines()
                     if line.startswith("# HELP faregate_tokens_total"))
    assert "uncached" in help_line


async def test_free_calls_are_in_neither_and_requests_agree(gateway):
    gw = gateway
    client = gw.client()
    await client.chat.completions.create(model="gpt-4o-mini",
                                         messages=[{"role": "user", "content": "hi"}])
    await client.models.list()
    await client.models.list()
    await gw.ledger_rows(1)
    text = await gw.metrics_text()
    assert requests_counted(text, endpoint="other") == 0  # GET /v1/models: free, no row
    rep = await report(gw)
    assert rep.total_requests == 1
    counted = sum(v for labels, v in samples(text, "faregate_requests_total")
                  if labels["model"] != "none")
    assert counted == rep.total_requests


async def test_a_realtime_session_is_one_request_in_both(rt_gateway):
    gw = await rt_gateway()
    async with gw.client().realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        for words in ("hello there", "and again", "once more"):
            await text_turn(conn, words)
    [session] = await sessions_of(gw)
    rows = await gw.ledger_rows(3)
    assert len(rows) == 3 and {r.session_id for r in rows} == {session.id}
    assert sum("session_start" in r.flags for r in rows) == 1
    rep = await report(gw)
    assert rep.total_requests == 1
    by_model = await gw.state.ledger.usage(None, None, "model")
    assert [r.requests for r in by_model.rows] == [1]
    text = await gw.metrics_text()
    assert requests_counted(text, endpoint="/v1/realtime", status="101") == 1
    assert requests_counted(text) == 1


async def test_a_live_session_with_usage_updates_is_one_request(rt_gateway):
    gw = await rt_gateway()
    await live_session(gw, 3)
    await sessions_of(gw)
    assert len(await gw.ledger_rows(3)) == 3
    rep = await report(gw)
    assert rep.total_requests == 1
    by_day = await gw.state.ledger.usage(None, None, "day")
    assert sum(r.requests for r in by_day.rows) == 1
    text = await gw.metrics_text()
    assert requests_counted(text, endpoint="/v1/live/sessions") == 1
