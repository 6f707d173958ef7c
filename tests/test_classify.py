"""The pure steps before admission, as tables: canonical paths, call classes, strict JSON.

No server: each function is fed what a hostile caller might send and checked
against the one answer faregate promises (a canonical path or a refusal; a
class; a parsed value or `Unreadable`).
"""

from __future__ import annotations

import pytest

from faregate.proxy.meter import (
    FRAME_KEYS,
    Unreadable,
    canonical_path,
    classify,
    route_label,
    session_endpoint,
    strict_json,
)
from faregate.proxy.meter._session import read_client_frame

PATHS = [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v1/chat/completions?stream=true", "/v1/chat/completions"),
    ("/v1/./chat/completions", "/v1/chat/completions"),
    ("/v1/%2e/chat/completions", "/v1/chat/completions"),
    ("/v1/%2E/chat/%2e/completions", "/v1/chat/completions"),
    ("/v1//chat///completions/", "/v1/chat/completions"),
    ("/v1/%63hat/completions", "/v1/chat/completions"),
    ("/v1/files/file-abc_1/content", "/v1/files/file-abc_1/content"),
    ("/v1/models/ft:gpt-4o-mini:org:x:abc", "/v1/models/ft:gpt-4o-mini:org:x:abc"),
    ("/v1/models/ft%3Agpt-4o", "/v1/models/ft:gpt-4o"),
    ("/v1/.well-known", "/v1/.well-known"),
    ("/v1/..", None), ("/v1/x/../responses", None), ("/v1/%2e%2e/admin", None),
    ("/v1/.%2e/admin", None), ("/v1/chat%2fcompletions", None), ("/v1/a%5cb", None),
    ("/v1/a\\b", None), ("/v1/chat;jsessionid=1/completions", None), ("/v1/a%00", None),
    ("/v1/a%0Ab", None), ("/v1/%25", None), ("/v1/%zz", None), ("/v1/caf\u00e9", None),
    ("/v1/ch%C3%A4t", None), ("/v1", None), ("/v1/", None), ("/v2/chat/completions", None),
    ("//v1/chat/completions", "/v1/chat/completions"), ("/./v1/chat/completions", "/v1/chat/completions"),
    ("http://evil/v1/models", None), ("/v1/" + "a" * 3000, None),
]


@pytest.mark.parametrize("raw,expected", PATHS)
def test_canonical_paths(raw, expected):
    assert canonical_path(raw) == expected


CLASSES = [
    ("POST", "/v1/chat/completions", "metered", "/v1/chat/completions"),
    ("POST", "/v1/CHAT/completions", "metered", "/v1/chat/completions"),
    ("POST", "/v1/responses/compact", "metered", "/v1/responses/compact"),
    ("POST", "/v1/batches", "metered", "/v1/batches"),
    ("GET", "/v1/chat/completions", "free", None),
    ("GET", "/v1/responses/resp_1", "free", None),
    ("DELETE", "/v1/files/file-1", "free", None),
    ("POST", "/v1/files", "free", None),
    ("POST", "/v1/uploads/upload_1/parts", "free", None),
    ("POST", "/v1/responses/resp_1/cancel", "free", None),
    ("POST", "/v1/responses/input_tokens", "free", None),
    ("POST", "/v1/batches/batch_1/cancel", "free", None),
    ("POST", "/v1/fine_tuning/jobs", "billable", "/v1/fine_tuning/jobs"),
    ("POST", "/v1/fine_tuning/jobs/ftjob-1/resume", "billable", "/v1/fine_tuning/jobs/{id}/resume"),
    ("POST", "/v1/vector_stores/vs_1/search", "billable", "/v1/vector_stores/{id}/search"),
    ("POST", "/v1/realtime/calls", "metered", "/v1/realtime/calls"),  # the session reserved
    ("PUT", "/v1/chat/completions", "billable", "/v1/chat/completions"),
    ("PATCH", "/v1/anything/new", "billable", "/v1/{id}/{id}"),
    ("POST", "/v1/brand_new_api", "billable", "/v1/{id}"),
]


@pytest.mark.parametrize("method,path,expected,label", CLASSES)
def test_call_classes(method, path, expected, label):
    endpoint = classify(method, path)
    got = "free" if endpoint is None else "metered" if endpoint.metered else "billable"
    assert (got, endpoint.path if endpoint else None) == (expected, label)


def test_labels_of_billable_calls_are_bounded():
    assert route_label("/v1/vector_stores/vs_abc/files/file-1") == "/v1/vector_stores/{id}/files/{id}"
    assert route_label("/v1/" + "/".join(f"x{i}" for i in range(50))).count("/") == 8


@pytest.mark.parametrize("path,label", [
    ("/v1/realtime", "/v1/realtime"), ("/v1/realtime/translations", "/v1/realtime/translations"),
    ("/v1/live/sessions", "/v1/live/sessions"), ("/v1/live/sessions/s_1/attach", "/v1/live/sessions"),
    ("/v1/responses", "/v1/responses"), ("/v1/chat/completions", None), ("/v1/realtimex", None)])
def test_websocket_paths(path, label):
    assert session_endpoint(path) == label


BODIES = [
    (b'{"model": "gpt-4o", "messages": []}', {"model": "gpt-4o", "messages": []}),
    (b'{"model": "a", "tools": [{"type": "image_generation", "model": "gpt-image-1"}]}', ...),
    (b'{"text": "caf\\u00e9"}', {"text": "caf\u00e9"}),
    (b'{"text": "a \\"model\\": b", "model": "x"}', ...),
    (b"\xef\xbb\xbf{}", Unreadable),
    (b'{"a": "\xff"}', Unreadable),
    (b"{'model': 'x'}", Unreadable),
    (b'{"model": 1e999}', Unreadable),
    (b'{"model": "a", "model": "b"}', Unreadable),
    (b'{"model": "a", "mod\\u0065l": "b"}', Unreadable),
    (b'{"\\u006dodel": "a", "model": "b"}', Unreadable),
    (b'{"n": 1, "n": 9}', Unreadable),
    (b'{"stream": false, "stream": true}', Unreadable),
    (b'{"x": {"model": "a"}, "y": {"model": "b"}}', ...),  # two objects: fine
    (b'{"x": 1, "x": 2}', {"x": 2}),  # not a key that changes money
]


@pytest.mark.parametrize("raw,expected", BODIES)
def test_strict_json(raw, expected):
    if expected is Unreadable:
        with pytest.raises(Unreadable):
            strict_json(raw)
    elif expected is ...:
        strict_json(raw)
    else:
        assert strict_json(raw) == expected


FRAMES = [
    ('{"type": "response.create"}', "response.create", None),
    ('{"event_id": "e", "response": {"metadata": {"type": "x"}}, "type": "response.create"}',
     "response.create", None),
    ('{"session": {"type": "realtime", "model": "m"}, "type": "session.update"}',
     "session.update", None),
    ('  {"type": "input_audio_buffer.append", "audio": "AAAA"}', "input_audio_buffer.append",
     None),
    ('{"type": "a", "type": "response.create"}', None, "refused"),
    ('\ufeff{"type": "response.create"}', None, "refused"),
    ('{"type": "response.create",}', None, "refused"),
    (b'{"type": "response.create"}', "response.create", None),
    (b"\x00\x01binary audio", None, None),
    ("not json at all", None, None),
    ('["a list"]', None, None),
]


@pytest.mark.parametrize("frame,kind,refused", FRAMES)
def test_client_frames_are_read_not_sniffed(frame, kind, refused):
    event = read_client_frame(frame)
    assert event.type == kind
    assert (event.refused is not None) == (refused is not None)


def test_frame_keys_cover_the_event_type():
    assert "type" in FRAME_KEYS
