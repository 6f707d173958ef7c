"""The OpenAI organization Admin API, through the official SDK's admin client.

Every call is bounded in time (`[provider] timeout_s` per attempt, and a
deadline over all attempts) and retried with exponential backoff on 429,
408/409 and 5xx by the SDK itself (which honours `retry-after`). Nothing here
runs on the request path: the CLI and serve's daily jobs use it. The admin
key is the SDK's `admin_api_key` and never appears in a log line or error.
The SDK is imported only when a client is made (it takes ~1 s to import; the
proxy does not need it to serve).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Awaitable, Callable, Sequence, TypeVar
from urllib.parse import urlsplit

from .._config import Settings
from ._costs import CostLine, parse_costs_page

log = logging.getLogger("faregate.provider")

MAX_RETRIES = 4
MAX_PAGES = 1000
MAX_LISTED = 10_000
BUCKETS_PER_PAGE = 31
T = TypeVar("T")


class ProviderError(Exception):
    """The Admin API could not answer (after retries), or is not configured."""


def admin_base_url(settings: Settings) -> str:
    """`[provider] admin_url`, else the origin of `[server] upstream`, plus `/v1`."""
    url = settings.provider.admin_url
    if not url:
        parts = urlsplit(settings.server.upstream)
        url = f"{parts.scheme}://{parts.netloc}"
    return url.rstrip("/") + "/v1"


def _midnight(d: date) -> int:
    return int(datetime.combine(d, time.min, timezone.utc).timestamp())


def _why(exc: BaseException) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, openai.APITimeoutError)):
        return "timed out"
    return type(exc).__name__


class ProviderApi:
    """The few Admin API calls faregate makes. Create with `ProviderApi.from_settings`."""

    def __init__(self, admin_key: str, base_url: str, *, timeout_s: float,
                 max_retries: int = MAX_RETRIES) -> None:
        import openai

        # The SDK logs request options (headers among them) at DEBUG: keep the key out.
        logging.getLogger("openai").setLevel(logging.INFO)
        self._errors = (openai.APIError, TimeoutError, asyncio.TimeoutError)
        self._not_found = openai.NotFoundError
        self._client = openai.AsyncOpenAI(
            api_key="unused-admin-calls-only", admin_api_key=admin_key, base_url=base_url,
            timeout=timeout_s, max_retries=max_retries)
        # Each attempt is bounded by the SDK; all attempts and their backoff by this.
        self._deadline = timeout_s * (max_retries + 1) + 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "ProviderApi":
        env = settings.provider.admin_key_env
        key = os.environ.get(env)
        if not key:
            raise ProviderError(f"no Admin API key: ${env} is not set ([provider] admin_key_env)")
        return cls(key, admin_base_url(settings), timeout_s=settings.provider.timeout_s)

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._deadline):
                return await call()
        except self._errors as exc:
            why = _why(exc)
            log.error("admin API call failed", extra={"call": what, "error": why})
            raise ProviderError(f"Admin API {what}: {why}") from None

    async def costs(self, first: date, last: date, group_by: Sequence[str]) -> list[CostLine]:
        """Daily costs from `first` to `last` (inclusive, UTC), every page."""
        usage = self._client.admin.organization.usage.with_raw_response
        lines: list[CostLine] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            args: dict[str, Any] = {
                "start_time": _midnight(first), "end_time": _midnight(last + timedelta(days=1)),
                "bucket_width": "1d", "limit": BUCKETS_PER_PAGE}
            if group_by:
                args["group_by"] = list(group_by)
            if cursor is not None:
                args["page"] = cursor
            raw = await self._call("costs", lambda: usage.costs(**args))
            try:
                page = parse_costs_page(raw.text)
            except ValueError as exc:
                raise ProviderError(f"Admin API costs: unreadable answer ({exc})") from None
            if page.skipped:
                log.warning("cost results faregate could not read were skipped",
                            extra={"results": page.skipped})
            lines.extend(page.lines)
            cursor = page.next_page
            if cursor is None:
                return lines
        raise ProviderError(f"Admin API costs: more than {MAX_PAGES} pages")

    async def _listed(self, what: str, pages: Callable[[], Any]) -> list[Any]:
        async def collect() -> list[Any]:
            out = []
            async for item in pages():
                out.append(item)
                if len(out) >= MAX_LISTED:
                    break
            return out
        return await self._call(what, collect)

    async def projects(self) -> list[str]:
        """The organization's project ids."""
        listed = await self._listed(
            "projects", lambda: self._client.admin.organization.projects.list(limit=100))
        return [p.id for p in listed]

    async def project_keys(self, project: str) -> list[tuple[str, str]]:
        """(api key id, redacted value) of a project's API keys."""
        keys = self._client.admin.organization.projects.api_keys
        listed = await self._listed("project api keys",
                                    lambda: keys.list(project, limit=100))
        return [(k.id, k.redacted_value) for k in listed]

    async def spend_limit(self, project: str) -> int | None:
        """The project's hard monthly limit in cents, None when it has none."""
        limits = self._client.admin.organization.projects.spend_limit

        async def read() -> int | None:
            try:
                found = await limits.retrieve(project)
            except self._not_found:
                return None
            return int(found.threshold_amount)
        return await self._call("spend limit", read)

    async def set_spend_limit(self, project: str, cents: int) -> int:
        """Create or replace the project's hard monthly limit; returns what the API kept."""
        limits = self._client.admin.organization.projects.spend_limit
        done = await self._call("set spend limit", lambda: limits.update(
            project, currency="USD", interval="month", threshold_amount=int(cents)))
        return int(done.threshold_amount)
