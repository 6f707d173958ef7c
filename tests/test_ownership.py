"""Tenants cannot see each other's objects: by path, inside bodies, through lists.

Keys mode, run twice: with one upstream key shared by every tenant (the
upstream cannot tell them apart: faregate alone isolates), and with a key
per tenant (one OpenAI project each: the upstream isolates too). Tenant
`alpha` makes objects through faregate with the official SDK; tenant `beta`
tries to read, use, list and reference them and gets OpenAI's own 404 — from
faregate, before the upstream ever hears of it. `gamma` is marked
`shared_objects = true` and may reach objects made outside faregate.
"""

from __future__ import annotations

import io
import json

import aiohttp
import openai
import pytest
import websockets

from conftest import gateway_config, start_gateway
from fake_objects import FakeObjects
from faregate.proxy import parse_settings
from test_identity import sha

ALPHA, BETA, GAMMA = "fg-alpha-0001", "fg-beta-0002", "fg-gamma-0003"
SHARED_KEY = "sk-operator-shared-key-0000"
ALPHA_KEY, BETA_KEY = "sk-alpha-project-key-1111", "sk-beta-project-key-2222"
HELLO = "one two three"


def keys_config(mode: str) -> dict:
    tenants = {"alpha": {}, "beta": {}, "gamma": {"shared_objects": True}}
    if mode == "per_tenant":
        tenants["alpha"]["upstream_api_key_env"] = "FG_OWN_ALPHA"
        tenants["beta"]["upstream_api_key_env"] = "FG_OWN_BETA"
    return {
        "server": {"upstream_api_key_env": "FG_OWN_SHARED"},
        "identity": {"mode": "keys"},
        "keys": [{"sha256": sha(ALPHA), "tenant": "alpha"},
                 {"sha256": sha(BETA), "tenant": "beta"},
                 {"sha256": sha(GAMMA), "tenant": "gamma"}],
        "tenants": tenants,
    }


@pytest.fixture(params=["shared", "per_tenant"])
def mode(request):
    return request.param


@pytest.fixture
async def world(mode, make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("FG_OWN_SHARED", SHARED_KEY)
    monkeypatch.setenv("FG_OWN_ALPHA", ALPHA_KEY)
    monkeypatch.setenv("FG_OWN_BETA", BETA_KEY)
    fake = FakeObjects(upstream, {SHARED_KEY: "proj_ops", ALPHA_KEY: "proj_alpha",
                                  BETA_KEY: "proj_beta"})
    gw = await make_gateway(keys_config(mode))
    return gw, fake, gw.client(ALPHA), gw.client(BETA)


class Refused:
    """Asserts a call is a 404 faregate answered itself (the upstream never saw it)."""

    def __init__(self, upstream):
        self.upstream = upstream

    async def __call__(self, call, param: str | None = None):
        seen = len(self.upstream.requests)
        with pytest.raises(openai.NotFoundError) as info:
            await call
        assert len(self.upstream.requests) == seen, "the upstream heard of it"
        body = info.value.body
        assert body["type"] == "invalid_request_error" and body["message"]
        assert info.value.response.headers.get("x-faregate-request-id")
        if param is not None:
            assert body["param"] == param
        return body


async def test_files_batches_and_their_outputs(world, upstream):
    gw, fake, alpha, beta = world
    refused = Refused(upstream)
    mine = await alpha.files.create(file=("in.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    batch = await alpha.batches.create(input_file_id=mine.id, endpoint="/v1/chat/completions",
                                       completion_window="24h")
    done = await alpha.batches.retrieve(batch.id)  # its output file becomes alpha's too
    assert (await alpha.files.content(done.output_file_id)).content
    # by path
    await refused(beta.files.retrieve(mine.id))
    await refused(beta.files.content(mine.id))
    await refused(beta.files.delete(mine.id))
    await refused(beta.batches.retrieve(batch.id))
    await refused(beta.batches.cancel(batch.id))
    await refused(beta.files.content(done.output_file_id))
    # inside a body
    await refused(beta.batches.create(input_file_id=mine.id, endpoint="/v1/chat/completions",
                                      completion_window="24h"), "input_file_id")
    # through lists
    theirs = await beta.files.create(file=("b.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    assert [f.id async for f in beta.files.list()] == [theirs.id]
    assert [b.id async for b in beta.batches.list()] == []
    assert {f.id async for f in alpha.files.list()} == {mine.id, done.output_file_id}
    assert [b.id async for b in alpha.batches.list()] == [batch.id]


async def test_responses_and_conversations(world, upstream):
    gw, fake, alpha, beta = world
    refused = Refused(upstream)
    file = await alpha.files.create(file=("a.pdf", io.BytesIO(b"%PDF")), purpose="user_data")
    conv = await alpha.conversations.create()
    first = await alpha.responses.create(model="gpt-4o-mini", input=HELLO, conversation=conv.id)
    second = await alpha.responses.create(model="gpt-4o-mini", input=HELLO,
                                          previous_response_id=first.id)
    assert (await alpha.responses.retrieve(second.id)).id == second.id
    await alpha.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "user", "content": HELLO}])
    await refused(beta.responses.retrieve(first.id))
    await refused(beta.responses.delete(first.id))
    await refused(beta.responses.input_items.list(first.id))
    await refused(beta.conversations.retrieve(conv.id))
    await refused(beta.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "user", "content": HELLO}]))
    body = await refused(beta.responses.create(model="gpt-4o-mini", input=HELLO,
                                               previous_response_id=first.id))
    assert body["code"] == "previous_response_not_found"
    await refused(beta.responses.create(model="gpt-4o-mini", input=HELLO,
                                        conversation={"id": conv.id}), "conversation")
    await refused(beta.responses.create(model="gpt-4o-mini", input=[{
        "role": "user", "content": [{"type": "input_file", "file_id": file.id},
                                    {"type": "input_text", "text": HELLO}]}]), "file_id")
    await refused(beta.chat.completions.create(model="gpt-4o-mini", messages=[{
        "role": "user", "content": [{"type": "file", "file": {"file_id": file.id}}]}]),
        "file_id")
    # a streamed response is alpha's as soon as its id shows
    stream = await alpha.responses.create(model="gpt-4o-mini", input=HELLO, stream=True)
    streamed = None
    async for event in stream:
        if event.type == "response.created":
            streamed = event.response.id
            assert gw.state.objects.owners.known(streamed) == "alpha"
    await refused(beta.responses.retrieve(streamed))
    # an unstored response is nobody's to read back
    loose = await alpha.responses.create(model="gpt-4o-mini", input=HELLO, store=False)
    assert gw.state.objects.owners.known(loose.id) is None


async def test_vector_stores_containers_uploads_and_fine_tuning(world, upstream):
    gw, fake, alpha, beta = world
    refused = Refused(upstream)
    file = await alpha.files.create(file=("t.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    store = await alpha.vector_stores.create(name="kb", file_ids=[file.id])
    box = await alpha.containers.create(name="box")
    upload = await alpha.uploads.create(bytes=3, filename="u.jsonl", mime_type="text/jsonl",
                                        purpose="batch")
    completed = await alpha.uploads.complete(upload.id, part_ids=[])
    job = await alpha.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id)
    result = (await alpha.fine_tuning.jobs.retrieve(job.id)).result_files[0]
    assert (await alpha.files.content(result)).content
    await alpha.vector_stores.search(store.id, query="q")
    for call in (beta.vector_stores.retrieve(store.id), beta.vector_stores.search(store.id,
                 query="q"), beta.vector_stores.files.create(store.id, file_id=file.id),
                 beta.containers.retrieve(box.id), beta.uploads.complete(upload.id, part_ids=[]),
                 beta.files.retrieve(completed.file.id), beta.fine_tuning.jobs.retrieve(job.id),
                 beta.fine_tuning.jobs.cancel(job.id), beta.files.content(result)):
        await refused(call)
    await refused(beta.vector_stores.create(name="x", file_ids=[file.id]), "file_ids")
    await refused(beta.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id),
                  "training_file")
    await refused(beta.responses.create(model="gpt-4o-mini", input=HELLO, tools=[{
        "type": "file_search", "vector_store_ids": [store.id]}]), "vector_store_ids")
    await refused(beta.responses.create(model="gpt-4o-mini", input=HELLO, tools=[{
        "type": "code_interpreter", "container": box.id}]), "container")
    assert [v.id async for v in beta.vector_stores.list()] == []
    assert [c.id async for c in beta.containers.list()] == []
    assert [j.id async for j in beta.fine_tuning.jobs.list()] == []
    assert [v.id async for v in alpha.vector_stores.list()] == [store.id]
    assert [j.id async for j in alpha.fine_tuning.jobs.list()] == [job.id]


async def test_realtime_calls_and_their_sideband(world, upstream):
    gw, fake, alpha, beta = world
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/realtime/calls", data=b"v=0\r\n",
                             headers={"Authorization": f"Bearer {ALPHA}",
                                      "Content-Type": "application/sdp"}) as r:
            assert r.status == 201
            call_id = r.headers["Location"].rsplit("/", 1)[-1]
        for key, status in ((BETA, 404), (ALPHA, 200)):
            async with http.post(gw.url + f"/v1/realtime/calls/{call_id}/hangup",
                                 headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == status, await r.text()
    url = gw.url.replace("http://", "ws://") + f"/v1/realtime?call_id={call_id}"
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {BETA}"}):
            pass
    assert info.value.response.status_code == 404
    assert json.loads(info.value.response.body)["error"]["param"] == "call_id"


async def test_lists_page_through_other_tenants_objects(world, upstream):
    """Pages full of another tenant's objects are skipped, so the SDK's paging still
    visits every object of the caller's own, and nothing else."""
    gw, fake, alpha, beta = world
    made: dict[str, list[str]] = {"alpha": [], "beta": []}
    order = [("alpha", alpha)] * 5 + [("beta", beta)] + [("alpha", alpha)] * 5 + [("beta", beta)]
    for who, client in order:
        f = await client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
        made[who].append(f.id)
    assert [f.id async for f in beta.files.list(limit=2)] == made["beta"]
    assert [f.id async for f in alpha.files.list(limit=3)] == made["alpha"]
    page = await beta.files.list(limit=2)  # one page: the caller's ids name its ends
    assert page.data[0].id == made["beta"][0]


async def test_objects_made_outside_faregate_only_for_shared_tenants(world, upstream, mode):
    gw, fake, alpha, beta = world
    outside = fake.make("file", SHARED_KEY, purpose="batch")
    gamma = gw.client(GAMMA)
    assert (await gamma.files.retrieve(outside["id"])).id == outside["id"]
    assert [f.id async for f in gamma.files.list()] == [outside["id"]]
    await Refused(upstream)(alpha.files.retrieve(outside["id"]))
    assert [f.id async for f in alpha.files.list()] == []
    mine = await alpha.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    await Refused(upstream)(gamma.files.retrieve(mine.id))  # shared: only the unowned


async def test_a_tenant_key_variable_left_unset_is_refused_not_shared(make_gateway, monkeypatch,
                                                                       upstream):
    """Per-tenant keys never fall back to the shared key (that would undo the isolation)."""
    monkeypatch.setenv("FG_OWN_SHARED", SHARED_KEY)
    monkeypatch.delenv("FG_OWN_ALPHA", raising=False)
    gw = await make_gateway(keys_config("per_tenant"))
    with pytest.raises(openai.InternalServerError) as info:
        await gw.client(ALPHA).files.list()
    assert info.value.body["code"] == "upstream_key_missing" and upstream.requests == []


async def test_passthrough_callers_keep_their_own_keys_view(make_gateway, upstream):
    """Passthrough: a caller's own key is what the upstream checks, so an object faregate
    never saw is the upstream's to allow — but another tenant's object made through
    faregate is not."""
    fake = FakeObjects(upstream)
    gw = await make_gateway({"identity": {"allow_header_identity": True}})
    own = gw.client("sk-caller-one-key-000", default_headers={"x-faregate-tenant": "one"})
    other = gw.client("sk-caller-one-key-000", default_headers={"x-faregate-tenant": "two"})
    outside = fake.make("file", "sk-caller-one-key-000")
    assert (await own.files.retrieve(outside["id"])).id == outside["id"]
    mine = await own.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    await Refused(upstream)(other.files.retrieve(mine.id))
    assert outside["id"] in [f.id async for f in other.files.list()]
    assert mine.id not in [f.id async for f in other.files.list()]


async def test_another_replica_finds_the_owner_in_the_ledger(postgres, pg_database, upstream,
                                                              tmp_path, monkeypatch):
    """Two replicas on one PostgreSQL: an object made through one is its tenant's on the
    other too (a miss there asks the ledger once, by primary key)."""
    from embedded_pg import reset_database

    await reset_database(pg_database)
    monkeypatch.setenv("FG_OWN_SHARED", SHARED_KEY)
    FakeObjects(upstream)
    replicas = []
    for name in ("a", "b"):
        data = gateway_config(upstream.url, tmp_path, keys_config("shared"), db=f"{name}.db")
        data["storage"]["url"] = pg_database
        replicas.append(await start_gateway(parse_settings(data)))
    one, two = replicas
    try:
        mine = await one.client(ALPHA).files.create(file=("x.jsonl", io.BytesIO(b"{}\n")),
                                                    purpose="batch")
        assert two.state.objects.owners.known(mine.id) is None
        assert (await two.client(ALPHA).files.retrieve(mine.id)).id == mine.id
        await Refused(upstream)(two.client(BETA).files.retrieve(mine.id))
        assert two.state.objects.owners.known(mine.id) == "alpha"
    finally:
        for gw in replicas:
            await gw.stop()


async def test_no_spelling_of_a_request_slips_past_the_check(world, upstream):
    """Doubled slashes, a JSON body sent as text, a byte-order mark: still checked."""
    gw, fake, alpha, beta = world
    mine = await alpha.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    seen = len(upstream.requests)
    auth = {"Authorization": f"Bearer {BETA}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + f"/v1//files//{mine.id}", headers=auth) as r:
            assert r.status == 404
        body = json.dumps({"input_file_id": mine.id, "endpoint": "/v1/chat/completions",
                           "completion_window": "24h"}).encode()
        async with http.post(gw.url + "/v1/batches", data=body,
                             headers={**auth, "Content-Type": "text/plain"}) as r:
            assert r.status == 404 and (await r.json())["error"]["param"] == "input_file_id"
        # A byte-order mark: faregate's strict reader refuses the body before anything else.
        async with http.post(gw.url + "/v1/batches", data=b"\xef\xbb\xbf" + body,
                             headers={**auth, "Content-Type": "application/json"}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "invalid_request_body"
    assert len(upstream.requests) == seen
