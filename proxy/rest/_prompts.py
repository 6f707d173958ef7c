"""Stored prompts: the model each one ran, learned from its answers.

A Responses call may name a stored prompt (`prompt.id`, `prompt.version`)
and no model: the model is set upstream and shows only in the answer. Such
a call is reserved at the dearest rate of the models the caller may use;
once an answer has said which model the prompt runs, the next call with the
same prompt is checked against the caller's allowlist before it is
forwarded. Bounded, in memory (a restart learns again from one answer).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

log = logging.getLogger("faregate.prompts")

MAX_PROMPTS = 10_000


class PromptModels:
    """prompt id (with version) -> the model its last answer named."""

    def __init__(self) -> None:
        self._models: OrderedDict[str, str] = OrderedDict()

    def model(self, prompt: str) -> str | None:
        return self._models.get(prompt)

    def learn(self, prompt: str, model: str | None, allowed: bool, tenant: str) -> None:
        """Note what an answer said; a model outside the caller's allowlist is logged."""
        if not model:
            return
        self._models[prompt] = model
        self._models.move_to_end(prompt)
        while len(self._models) > MAX_PROMPTS:
            self._models.popitem(last=False)
        if not allowed:
            log.warning("a stored prompt ran a model outside the caller's allowlist; "
                        "later calls with it are refused",
                        extra={"tenant": tenant, "prompt": prompt[:128], "model": model[:128]})
