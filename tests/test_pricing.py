"""faregate.pricing: real usage payloads in, exact charges out.

Payload shapes are the ones OpenAI documents (API reference examples and
reported `response.done` events); expected costs are worked by hand from the
shipped table's rates.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest

from faregate import pricing
from faregate.pricing import (
    TOKEN_CLASSES,
    Charge,
    PriceTableError,
    Usage,
    cost_of,
    find_json_str,
    find_usage,
    format_price_table,
    load_price_table,
    price,
    resolve_model,
    to_nanos,
    usage_for_endpoint,
    usage_from_chat,
    usage_from_realtime,
    usage_from_speech,
    usage_from_transcription,
)

AT = datetime(2026, 11, 1, tzinfo=timezone.utc)
D = Decimal
SHIPPED = load_price_table()  # every call names its table: there is no default

# --- payloads, as the API returns them -------------------------------------

CHAT_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
CHAT_CACHED = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920},
    "completion_tokens_details": {"reasoning_tokens": 128},
}
CHAT_AUDIO = {  # gpt-4o-audio-preview: audio in the prompt and in the answer
    "prompt_tokens": 120,
    "completion_tokens": 300,
    "total_tokens": 420,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 250, "text_tokens": 50},
}
RESPONSES_USAGE = {  # a real gpt-4.1-2025-04-14 response with a warm prompt cache
    "input_tokens": 12033,
    "input_tokens_details": {"cached_tokens": 11904},
    "output_tokens": 44,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 12077,
}
REALTIME_PREVIEW_USAGE = {  # response.done from gpt-4o-realtime-preview-2024-12-17
    "total_tokens": 821,
    "input_tokens": 789,
    "output_tokens": 32,
    "input_token_details": {
        "text_tokens": 313,
        "audio_tokens": 476,
        "cached_tokens": 640,
        "cached_tokens_details": {"text_tokens": 256, "audio_tokens": 384},
    },
    "output_token_details": {"text_tokens": 9, "audio_tokens": 23},
}
REALTIME_GA_USAGE = {  # response.done from gpt-realtime, with image input
    "total_tokens": 1253,
    "input_tokens": 1132,
    "output_tokens": 121,
    "input_token_details": {
        "text_tokens": 119,
        "audio_tokens": 13,
        "image_tokens": 1000,
        "cached_tokens": 564,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 500},
    },
    "output_token_details": {"text_tokens": 30, "audio_tokens": 91},
}
TRANSCRIPTION_TOKENS = {
    "type": "tokens",
    "input_tokens": 14,
    "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
    "output_tokens": 45,
    "total_tokens": 59,
}
TRANSCRIPTION_DURATION = {"type": "duration", "seconds": 9}
GPT_IMAGE_USAGE = {
    "total_tokens": 100,
    "input_tokens": 50,
    "output_tokens": 50,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
}
EMBEDDINGS_USAGE = {"prompt_tokens": 8, "total_tokens": 8}


# --- exact costs -------------------------------------------------------------

@pytest.mark.parametrize(
    "kind, usage, model, extra, cost, breakdown",
    [
        ("chat", CHAT_USAGE, "gpt-4o", {}, "0.0075", {"input": "0.0025", "output": "0.005"}),
        (
            "chat", CHAT_CACHED, "gpt-4o-mini-2024-07-18", {},
            # 86 × 0.15 + 1920 × 0.075 + 300 × 0.60, per 1M
            "0.0003369", {"input": "0.0000129", "cached_input": "0.000144", "output": "0.00018"},
        ),
        (
            "chat", CHAT_AUDIO, "gpt-4o-audio-preview-2024-12-17", {},
            # 20 × 2.5 + 100 × 40 + 50 × 10 + 250 × 80
            "0.02455",
            {"input": "0.00005", "audio_input": "0.004", "output": "0.0005", "audio_output": "0.02"},
        ),
        (
            "responses", RESPONSES_USAGE, "gpt-4.1-2025-04-14", {},
            # 129 × 2 + 11904 × 0.5 + 44 × 8
            "0.006562", {"input": "0.000258", "cached_input": "0.005952", "output": "0.000352"},
        ),
        ("embeddings", EMBEDDINGS_USAGE, "text-embedding-3-small", {}, "0.00000016", {"input": "0.00000016"}),
        (
            "realtime", REALTIME_PREVIEW_USAGE, "gpt-4o-realtime-preview-2024-12-17", {},
            # 57 × 5 + 256 × 2.5 + 92 × 40 + 384 × 2.5 + 9 × 20 + 23 × 80
            "0.007585",
            {
                "input": "0.000285", "cached_input": "0.00064", "audio_input": "0.00368",
                "cached_audio_input": "0.00096", "output": "0.00018", "audio_output": "0.00184",
            },
        ),
        (
            "realtime", REALTIME_GA_USAGE, "gpt-realtime-2025-08-28", {},
            # 55×4 + 64×0.4 + 13×32 + 500×5 + 500×0.5 + 30×16 + 91×64
            "0.0097156",
            {
                "input": "0.00022", "cached_input": "0.0000256", "audio_input": "0.000416",
                "image_input": "0.0025", "cached_image_input": "0.00025",
                "output": "0.00048", "audio_output": "0.005824",
            },
        ),
        (
            "transcription", TRANSCRIPTION_TOKENS, "gpt-4o-transcribe", {},
            "0.000534", {"audio_input": "0.000084", "output": "0.00045"},
        ),
        ("transcription", TRANSCRIPTION_DURATION, "whisper-1", {}, "0.0009", {"seconds": "0.0009"}),
        (
            "images", GPT_IMAGE_USAGE, "gpt-image-1", {"n_images": 1, "size": "1024x1024"},
            "0.00245", {"input": "0.00005", "image_input": "0.0004", "image_output": "0.002"},
        ),
        (
            "images", None, "dall-e-3", {"n_images": 2, "size": "1024x1792", "quality": "hd"},
            "0.24", {"images": "0.24"},
        ),
        ("images", None, "dall-e-3", {"size": "1792x1024"}, "0.08", {"images": "0.08"}),
        ("images", None, "dall-e-2", {"size": "512x512"}, "0.018", {"images": "0.018"}),
        ("images", None, "dall-e-3", {"quality": "hd"}, "0.08", {"images": "0.08"}),
        ("images", None, "dall-e-3", {}, "0.04", {"images": "0.04"}),
        ("speech", None, "tts-1", {"characters": 4096}, "0.06144", {"characters": "0.06144"}),
        ("speech", None, "tts-1-hd", {"characters": 1000}, "0.03", {"characters": "0.03"}),
        ("moderations", {"prompt_tokens": 0}, "omni-moderation-latest", {}, "0", {}),
    ],
)
def test_exact_costs(kind, usage, model, extra, cost, breakdown):
    charge = price(usage_for_endpoint(kind, usage, table=SHIPPED, **extra), model, AT, SHIPPED)
    assert charge.priced
    assert charge.cost == D(cost)
    assert charge.breakdown == {k: D(v) for k, v in breakdown.items()}
    assert sum(charge.breakdown.values(), D(0)) == charge.cost
    table = load_price_table()
    entry = table.entry(model, AT)
    assert charge.price_version == f"{table.version}:{entry.family}@{entry.effective}"
    assert charge.usage.flags == (("price_unconfirmed",) if entry.unconfirmed else ())


def test_cost_is_exact_decimal_and_nanos():
    charge = price(Usage(input=1, output=1), "gpt-5-nano", AT, SHIPPED)  # 0.05 + 0.40 per 1M
    assert charge.cost == D("0.00000045")
    assert charge.cost_nanos == 450
    assert to_nanos(D("0.0000000005")) == 0  # half-even
    big = price(Usage(input=10**12), "gpt-4o", AT, SHIPPED)
    assert big.cost == D("2500000")


# --- normalisation: disjoint classes ----------------------------------------

def test_realtime_classes_are_disjoint_and_sum_to_the_report():
    u = usage_from_realtime(REALTIME_PREVIEW_USAGE)
    assert (u.input, u.cached_input, u.audio_input, u.cached_audio_input) == (57, 256, 92, 384)
    assert (u.output, u.audio_output) == (9, 23)
    assert u.total_tokens == REALTIME_PREVIEW_USAGE["total_tokens"]


def test_realtime_without_cached_split_takes_cache_from_text_first():
    raw = {**REALTIME_PREVIEW_USAGE, "input_token_details": {
        "text_tokens": 313, "audio_tokens": 476, "cached_tokens": 400}}
    u = usage_from_realtime(raw)
    assert (u.cached_input, u.cached_audio_input) == (313, 87)
    assert u.total_tokens == 821 and u.flags == ()


def test_chat_disjoint_and_reasoning_kept():
    u = usage_from_chat(CHAT_CACHED)
    assert (u.input, u.cached_input, u.output, u.reasoning) == (86, 1920, 300, 128)
    u = usage_from_chat(CHAT_AUDIO)
    assert (u.input, u.audio_input, u.output, u.audio_output) == (20, 100, 50, 250)


def test_transcription_both_shapes():
    tokens = usage_from_transcription(TRANSCRIPTION_TOKENS)
    assert (tokens.input, tokens.audio_input, tokens.output) == (0, 14, 45)
    duration = usage_from_transcription({"type": "duration", "seconds": 12.5})
    assert duration.seconds == D("12.5") and duration.total_tokens == 0
    assert price(duration, "whisper-1", AT, SHIPPED).cost == D("0.00125")


def test_speech_token_billed_model_is_estimated():
    exact = usage_from_speech(4096, "tts-1", SHIPPED)
    assert exact.characters == 4096 and not exact.estimated
    est = usage_from_speech(4096, "gpt-4o-mini-tts", SHIPPED)
    assert est.estimated and est.input == 1024 and est.characters == 4096
    charge = price(est, "gpt-4o-mini-tts", AT, SHIPPED)  # characters are informational here
    assert charge.breakdown == {"input": D("0.0006144")}
    assert "rate_missing" not in charge.usage.flags
    reported = usage_for_endpoint(
        "speech", {"input_tokens": 20, "output_tokens": 900, "total_tokens": 920},
        characters=80, model="gpt-4o-mini-tts", table=SHIPPED,
    )
    assert (reported.input, reported.audio_output, reported.estimated) == (20, 900, False)


SPEECH_DONE = {"input_tokens": 900, "output_tokens": 2000, "total_tokens": 2900}
CONFIGURED = SHIPPED.with_overrides({
    "my-tts": {"input": D(1), "audio_output": D(20)},  # token-billed, from config only
    "tts-1": {"input": D("0.5"), "audio_output": D(10)},  # now billed per token
    "my-chars-tts": {"per_1k_chars": D("0.02")},
})


@pytest.mark.parametrize(
    "model, table, characters, reported, tokens, estimated, cost",
    [
        # the reported usage is the bill: 900 x 0.60 + 2,000 x 12.00, per 1M
        ("gpt-4o-mini-tts", SHIPPED, 4000, SPEECH_DONE, (900, 2000), False, "0.02454"),
        ("gpt-4o-mini-tts-2025-03-20", SHIPPED, 4000, SPEECH_DONE, (900, 2000), False, "0.02454"),
        # no report (an audio body): text input estimated at ceil(4096 / 4) x 0.60
        ("gpt-4o-mini-tts", SHIPPED, 4096, None, (1024, 0), True, "0.0006144"),
        # per-character models are billed on the request's characters, exactly
        ("tts-1", SHIPPED, 4096, SPEECH_DONE, (0, 0), False, "0.06144"),
        ("my-chars-tts", CONFIGURED, 1000, SPEECH_DONE, (0, 0), False, "0.02"),
        # the table given decides: a config-only model, and tts-1 re-priced per token
        ("my-tts", CONFIGURED, 30, SPEECH_DONE, (900, 2000), False, "0.0409"),
        ("my-tts", CONFIGURED, 30, None, (8, 0), True, "0.000008"),
        ("tts-1", CONFIGURED, 30, {"input_tokens": 100, "output_tokens": 1000}, (100, 1000),
         False, "0.01005"),
    ],
)
def test_speech_is_billed_as_the_table_says(model, table, characters, reported, tokens,
                                            estimated, cost):
    usage = usage_from_speech(characters, model, table, reported)
    assert usage == usage_for_endpoint("speech", reported, characters=characters, model=model,
                                       table=table)
    assert (usage.input, usage.audio_output) == tokens and usage.characters == characters
    assert usage.estimated is estimated
    charge = price(usage, model, AT, table)
    assert charge.priced and charge.cost == D(cost)
    assert charge.usage.flags == ()  # no rate_missing: every billed part has its rate


def test_speech_reports_that_cannot_be_read():
    unknown = usage_from_speech(30, "no-such-tts", SHIPPED, SPEECH_DONE)
    assert (unknown.input, unknown.audio_output, unknown.estimated) == (900, 2000, False)
    assert not price(unknown, "no-such-tts", AT, SHIPPED).priced  # recorded, unpriced
    odd = usage_from_speech(30, "gpt-4o-mini-tts", SHIPPED, {"input_tokens": "900",
                                                              "output_tokens": 2000})
    # a count that is not a number cannot be true: the proxy charges the reservation
    assert (odd.input, odd.audio_output, odd.flags) == (
        0, 2000, ("usage_malformed", "usage_implausible"))
    junk = usage_from_speech(30, "gpt-4o-mini-tts", SHIPPED, ["not", "a", "report"])
    assert junk.estimated and junk.input == 8
    assert junk.flags == ("usage_malformed", "usage_implausible")


def test_missing_usage_and_unknown_endpoint_are_flagged():
    assert usage_for_endpoint("chat", None, table=SHIPPED).flags == ("usage_missing",)
    assert usage_for_endpoint("teleport", {}, table=SHIPPED).flags == ("usage_unknown_endpoint",)
    assert usage_for_endpoint("moderations", None, table=SHIPPED) == Usage()


# --- malformed input never raises, never charges negative ---------------------

@pytest.mark.parametrize(
    "kind, raw",
    [
        ("chat", {"prompt_tokens": "12", "completion_tokens": -3}),
        ("chat", {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}),
        ("chat", {"prompt_tokens": 10, "prompt_tokens_details": [1, 2]}),
        ("chat", [1, 2, 3]),
        ("responses", {"input_tokens": True, "output_tokens": 5.5}),
        ("embeddings", {"prompt_tokens": None, "total_tokens": "8"}),
        ("transcription", {"type": "duration", "seconds": -9}),
        ("transcription", {"type": "duration", "seconds": "NaN"}),
        ("realtime", "garbage"),
        ("realtime", {"input_tokens": 5, "input_token_details": {"text_tokens": 3,
                      "cached_tokens_details": {"text_tokens": 99}}}),
        ("images", {"input_tokens": 10**30, "output_tokens": {}}),
    ],
)
def test_malformed_usage_is_zeroed_and_flagged(kind, raw):
    u = usage_for_endpoint(kind, raw, table=SHIPPED)
    assert "usage_malformed" in u.flags
    assert all(v >= 0 for v in u.tokens().values()) and u.seconds >= 0
    charge = price(u, "gpt-4o", AT, SHIPPED)
    assert charge.cost >= 0


def test_negative_hand_built_usage_is_clamped_at_pricing():
    charge = price(Usage(input=-1_000_000, output=10, seconds=D(-5), images=-2), "gpt-4o", AT,
                   SHIPPED)
    assert charge.cost == D("0.0001")
    assert charge.usage.input == 0 and charge.usage.images == 0
    assert "usage_malformed" in charge.usage.flags


# --- fallbacks, unknown models --------------------------------------------------

def test_class_without_rate_billed_at_base_class_rate():
    # gpt-4o-2024-05-13 has no cached price: cached tokens cost full input.
    charge = price(Usage(cached_input=1000), "gpt-4o-2024-05-13", AT, SHIPPED)
    assert charge.breakdown == {"cached_input": D("0.005")}
    # gpt-4o-transcribe has no cached audio rate: audio rate applies.
    charge = price(Usage(cached_audio_input=1000), "gpt-4o-transcribe", AT, SHIPPED)
    assert charge.breakdown == {"cached_audio_input": D("0.006")}


def test_quantity_with_no_rate_at_all_is_flagged():
    charge = price(Usage(input=1000), "whisper-1", AT, SHIPPED)
    assert charge.cost == 0 and "rate_missing" in charge.usage.flags


def test_unknown_model_is_unpriced():
    charge = price(Usage(input=1000, output=1000), "my-private-model", AT, SHIPPED)
    assert isinstance(charge, Charge)
    assert (charge.priced, charge.cost, charge.family, charge.breakdown) == (False, D(0), None, {})


# --- model resolution --------------------------------------------------------

@pytest.mark.parametrize(
    "name, family",
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # own entry: launch price
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("GPT-4o-Mini ", "gpt-4o-mini"),
        ("gpt-realtime-2025-08-28", "gpt-realtime"),
        ("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
        ("o3-2025-04-16", "o3"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview"),
        ("gpt-4o-realtime-preview-2024-10-01", "gpt-4o-realtime-preview-2024-10-01"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"),
        ("gpt-4-0613", "gpt-4"),
        ("chatgpt-4o-latest", "chatgpt-4o-latest"),
        ("gpt-5-chat-latest", "gpt-5-chat-latest"),  # own limits: 128K, not gpt-5's 400K
        ("gpt-5-chat", "gpt-5-chat-latest"),
        ("ft:gpt-3.5-turbo-0125:acme::x", "ft:gpt-3.5-turbo"),
        ("ft:gpt-3.5-turbo-1106:acme::x", "ft:gpt-3.5-turbo-1106"),
        ("omni-moderation-latest", "omni-moderation"),
        ("ft:gpt-4o-mini-2024-07-18:acme:support:AbC123", "ft:gpt-4o-mini"),
        ("ft:gpt-5:acme::x", None),  # no fine-tune price: unpriced
        ("gpt-4o-minimal", None),  # no prefix matching
        ("gpt-4o-2024-08-06-extra", None),
        ("", None),
    ],
)
def test_resolve_model(name, family):
    assert resolve_model(name, SHIPPED) == family


def test_snapshots_resolve_against_the_table_given():
    """A family the config adds resolves its snapshots in that table, not the shipped one."""
    table = SHIPPED.with_overrides({"my-model": {"input": D(1)}})
    assert resolve_model("my-model-2025-01-01", table) == "my-model"
    assert resolve_model("my-model-2025-01-01", SHIPPED) is None


def test_mini_snapshot_never_priced_as_big_model():
    mini = price(Usage(input=1_000_000), "gpt-4o-mini-2024-07-18", AT, SHIPPED)
    assert mini.family == "gpt-4o-mini" and mini.cost == D("0.15")


# --- effective dates -----------------------------------------------------------

@pytest.mark.parametrize(
    "model, at, expected_input",
    [
        ("o3", datetime(2025, 5, 1, tzinfo=timezone.utc), "10.00"),
        ("o3-2025-04-16", datetime(2025, 6, 9, 23, 59, tzinfo=timezone.utc), "10.00"),
        ("o3", datetime(2025, 6, 10, tzinfo=timezone.utc), "2.00"),
        ("o3", datetime(2025, 1, 1, tzinfo=timezone.utc), "10.00"),  # before launch: first period
        ("gpt-5.6-luna", datetime(2026, 7, 29, 12, tzinfo=timezone.utc), "1.00"),
        ("gpt-5.6-luna", datetime(2026, 7, 30, tzinfo=timezone.utc), "0.20"),
        ("gpt-5.6-terra", datetime(2026, 8, 1), "2.00"),  # naive = UTC
    ],
)
def test_effective_date_selection(model, at, expected_input):
    assert load_price_table().entry(model, at).rates["input"] == D(expected_input)


# --- overrides -------------------------------------------------------------------

def test_overrides_replace_family_and_snapshot_wins():
    base = load_price_table()
    table = base.with_overrides({
        "gpt-4o": {"input": D("1.00"), "output": D("2.00")},
        "gpt-4o-2024-11-20": {"input": D("3"), "output": D("4")},
        "my-model": {"input": D(1), "per_image": D("0.5")},
    })
    assert re.fullmatch(re.escape(base.version) + r"\+config\.[0-9a-f]{8}", table.version)
    # family override covers snapshots; cached falls back to the new input rate
    c = price(Usage(input=1000, cached_input=1000, output=1000), "gpt-4o-2024-08-06", AT, table)
    assert c.cost == D("0.004") and c.price_version == f"{table.version}:gpt-4o@config"
    assert price(Usage(input=10**6), "gpt-4o-2024-11-20", AT, table).cost == D(3)
    assert price(Usage(images=2), "my-model", AT, table).cost == D(1)
    assert price(Usage(input=10**6), "gpt-4o", AT, SHIPPED).cost == D("2.50")  # base untouched


def test_override_version_is_stable_and_specific():
    base = load_price_table()
    a = base.with_overrides({"gpt-4o": {"input": D("1.0")}})
    b = base.with_overrides({"gpt-4o": {"input": D("1.00")}})
    c = base.with_overrides({"gpt-4o": {"input": D("1.01")}})
    assert a.version == b.version != c.version
    assert a.with_overrides({"x": {"input": 1}}).version.count("+config.") == 1
    assert base.with_overrides({}) is base


def test_aliases_price_other_names_as_a_model():
    """`[pricing.aliases]`: an Azure deployment name is priced as the model it runs."""
    base = load_price_table()
    table = base.with_aliases({"My-Deployment": "gpt-4o-mini-2024-07-18", "voice": "gpt-realtime"})
    assert table.resolve("my-deployment") == "gpt-4o-mini"  # a snapshot target -> its family
    usage = Usage(input=1000, output=1000)
    aliased = price(usage, "my-deployment", AT, table)
    assert aliased.cost == price(usage, "gpt-4o-mini", AT, base).cost
    assert aliased.family == "gpt-4o-mini"
    assert "priced_by_family" not in aliased.usage.flags
    assert base.resolve("my-deployment") is None  # the shipped table is untouched
    assert base.with_aliases({}) is base
    with pytest.raises(PriceTableError, match="unknown model"):
        base.with_aliases({"x": "gpt-4o-mni"})
    with pytest.raises(PriceTableError, match="has its own prices"):
        base.with_aliases({"gpt-4o": "gpt-4o-mini"})


@pytest.mark.parametrize("bad", [{"inptu": D(1)}, {"input": D(-1)}, {"input": "abc"}])
def test_bad_overrides_rejected(bad):
    with pytest.raises(PriceTableError):
        load_price_table().with_overrides({"gpt-4o": bad})


# --- the shipped table -------------------------------------------------------------

def test_shipped_table_is_complete_and_sourced():
    table = load_price_table()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.version)
    for family, periods in table.periods.items():
        for p in periods:
            assert p.source.startswith("https://"), family
            assert p.effective is not None, family
            assert all(isinstance(v, Decimal) for v in p.rates.values()), family
    for required in [
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5",
        "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "gpt-5.2", "gpt-5.4", "gpt-5.5", "o1",
        "o1-mini", "o1-pro", "o3", "o3-mini", "o3-pro", "o4-mini", "text-embedding-3-small",
        "text-embedding-3-large", "text-embedding-ada-002", "whisper-1", "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "dall-e-2",
        "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-realtime", "gpt-realtime-mini",
        "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview",
    ]:
        assert required in table.periods, required
    assert load_price_table() is table  # read once


def test_cost_of_is_the_cost_price_gives_for_every_period():
    """Reservations use `cost_of`, a shortcut of `price()`: they must never disagree."""
    table = load_price_table()
    rng = random.Random(11)
    classes = list(TOKEN_CLASSES)
    checked = 0
    for family, periods in table.periods.items():
        for p in periods:
            at = datetime.combine(p.effective, datetime.min.time(), timezone.utc)
            for _ in range(6):
                counts = {c: rng.choice([0, 0, 1, 37, 4096, 300_000]) for c in classes}
                usage = Usage(**counts, seconds=Decimal(rng.choice([0, 0, 7, "2.5"])),
                              characters=rng.choice([0, 120]), images=rng.choice([0, 0, 2]))
                assert cost_of(usage, family, at, table) == price(usage, family, at, table).cost
                checked += 1
    for odd in (Usage(input=-5, output=10**15), Usage(output=3, service_tier="flex"),
                Usage(input=9, tool_calls=(("web_search", 2),))):
        assert cost_of(odd, "gpt-5.4", None, table) == price(odd, "gpt-5.4", None, table).cost
    assert cost_of(Usage(input=5), "no-such-model", None, table) == 0
    assert checked > 300


def test_public_surface():
    for name in [
        "Usage", "Charge", "TOKEN_CLASSES", "to_nanos", "Price", "PriceTable",
        "load_price_table", "resolve_model", "price", "usage_for_endpoint", "find_usage",
        "find_json_str", "format_price_table", "usage_from_chat", "usage_from_responses",
        "usage_from_embeddings", "usage_from_transcription", "usage_from_images",
        "usage_from_speech", "usage_from_realtime",
    ]:
        assert hasattr(pricing, name), name
    assert TOKEN_CLASSES[0] == "input"


def test_token_class_groups_cover_every_class_once():
    """The ledger, reports and reservations sum these groups: none may miss a class."""
    assert sorted(pricing.INPUT_CLASSES + pricing.OUTPUT_CLASSES) == sorted(TOKEN_CLASSES)
    assert set(pricing.CACHED_CLASSES) < set(pricing.INPUT_CLASSES)
    assert "image_output" in pricing.OUTPUT_CLASSES and "audio_output" in pricing.OUTPUT_CLASSES


# --- find_usage / find_json_str ------------------------------------------------------

def test_find_usage_on_big_embeddings_body_parses_only_the_tail(monkeypatch):
    rng = random.Random(7)
    body = orjson.dumps({
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [rng.uniform(-1, 1) for _ in range(1536)]}
            for i in range(1000)
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8000, "total_tokens": 8000},
    })
    assert len(body) > 20_000_000
    parsed = []
    real_loads = orjson.loads
    monkeypatch.setattr(pricing._find.orjson, "loads", lambda b: parsed.append(len(b)) or real_loads(b))
    assert find_usage(body) == {"prompt_tokens": 8000, "total_tokens": 8000}
    assert parsed and max(parsed) < 100
    assert find_json_str(body, "object") == "list"


def test_find_usage_skips_usage_inside_strings():
    real = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    body = orjson.dumps({
        "id": "chatcmpl-1",
        "choices": [{"message": {"content": 'He wrote "usage": {"prompt_tokens": 1}'}}],
        "usage": real,
        "metadata": {'x "usage': {"prompt_tokens": 999}, "kind": "usage"},
        "note": 'trailing "usage": {"prompt_tokens": 2} {',
    })
    assert find_usage(body) == real


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}', None),
        (b'{"type":"response.completed","response":{"id":"r","status":"completed",'
         b'"usage":{"input_tokens":3,"output_tokens":4},"user":null}}',
         {"input_tokens": 3, "output_tokens": 4}),
        (b'{"usage" : \n {"prompt_tokens":1,"note":"} {"}}', {"prompt_tokens": 1, "note": "} {"}),
        (b'{"usage": {"prompt_tokens": 1', None),  # truncated body
        (b"", None),
        (b"not json", None),
    ],
)
def test_find_usage_shapes(body, expected):
    assert find_usage(body) == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
         b'"model":"gpt-4o-2024-08-06","choices":[]}', "gpt-4o-2024-08-06"),
        (b'{"role":"model","content":"the \\"model\\": \\"x\\"","model":"o3"}', "o3"),
        (b'{"model": "gpt-\\u00e9"}', "gpt-\u00e9"),
        (b'{"model": 5}', None),
        (b'{"x": "' + b"a" * 5000 + b'", "model": "late"}', None),  # beyond the limit
    ],
)
def test_find_json_str(body, expected):
    assert find_json_str(body, "model") == expected


# --- formatting ---------------------------------------------------------------------

def test_format_price_table():
    text = format_price_table(load_price_table())
    assert load_price_table().version in text.splitlines()[0]
    row = next(line for line in text.splitlines() if line.startswith("gpt-4o "))
    assert "2.50" in row and "1.25" in row and "10.00" in row and "https://" in row
    one = format_price_table(load_price_table(), "o3-2025-04-16")
    assert "priced as o3" in one and "2025-04-16" in one and "2025-06-10" in one
    assert "hd:1024x1792" in format_price_table(SHIPPED, "dall-e-3")
    assert "no price" in format_price_table(SHIPPED, "nope")


# -- model limits (context_window, max_output_tokens) ------------------------

LIMITED = """
version = "t1"
[[models."m"]]
effective = "2025-01-01"
source = "s"
input = 1.0
output = 2.0
context_window = 128000
max_output_tokens = 16384
[[models."m"]]
effective = "2025-06-01"
source = "s"
input = 0.5
output = 1.0
"""


def test_model_limits_are_read_and_later_periods_inherit_them():
    from faregate.pricing import loads_price_table

    table = loads_price_table(LIMITED)
    for at in (datetime(2025, 2, 1, tzinfo=timezone.utc), datetime(2025, 7, 1, tzinfo=timezone.utc)):
        entry = table.entry("m", at)
        assert (entry.context_window, entry.max_output_tokens) == (128000, 16384)
    # A config override replaces the rates, not what the model can do.
    over = table.with_overrides({"m": {"input": "3", "output": "4"}})
    assert over.entry("m").max_output_tokens == 16384
    assert over.with_overrides({"new": {"input": "1"}}).entry("new").max_output_tokens is None


@pytest.mark.parametrize("bad", ["0", "-5", "true", '"big"', "1.5", "10000000000"])
def test_model_limits_must_be_token_counts(bad):
    from faregate.pricing import PriceTableError, loads_price_table

    with pytest.raises(PriceTableError, match="max_output_tokens"):
        loads_price_table(LIMITED.replace("max_output_tokens = 16384", f"max_output_tokens = {bad}"))


def test_shipped_table_knows_the_limits_of_reasoning_and_realtime_families():
    from faregate.pricing import load_price_table

    table = load_price_table()
    for model in ("gpt-4o-mini", "gpt-5", "o3", "o4-mini", "gpt-realtime", "gpt-realtime-mini",
                  "gpt-realtime-2", "gpt-6.2-sol", "gpt-5.6-terra", "gpt-4.1-nano"):
        entry = table.entry(model)
        assert entry.context_window and entry.max_output_tokens, model
        assert entry.max_output_tokens <= entry.context_window
