"""Token counting without a vendor tokenizer.

The offline provider counts with this, and budgets use it to estimate a prompt
before the call. It over-counts English text relative to BPE tokenizers (every
word and punctuation mark is a token, long words several), which is the safe
side for a reservation.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

_TOKEN = re.compile(r"\w{1,8}|[^\w\s]")
MESSAGE_OVERHEAD = 4  # role and separators, as chat formats add them


# A prompt's messages are counted for the call's budget reservation, then again by a provider
# that counts locally (offline): the messages of the calls in flight fit the cache.
@lru_cache(maxsize=128)
def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    text = str(content or "")
    if message.get("tool_calls"):
        text += " " + json.dumps(message["tool_calls"], sort_keys=True)
    return text


def estimate_prompt(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> int:
    total = sum(count_tokens(message_text(m)) + MESSAGE_OVERHEAD for m in messages)
    if tools:
        total += count_tokens(json.dumps(tools, sort_keys=True))
    return total
