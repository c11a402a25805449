"""A client process of the gateway's concurrency test: N streamed chat completions at
once through the official async openai SDK, started when the parent writes a line;
prints {"completed": n, "refused": n, "other": [...]} as JSON."""

from __future__ import annotations

import asyncio
import json
import sys

import openai


async def main(url: str, key: str, n: int, max_tokens: int) -> None:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
    print("ready", flush=True)
    sys.stdin.readline()

    async def one(i: int) -> str:
        try:
            stream = await client.chat.completions.create(
                model="up/gpt-4o-mini", stream=True, max_tokens=max_tokens,
                messages=[{"role": "user", "content": "Tell me about Oslo."}],
            )
            finish = None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            return "completed" if finish == "stop" else f"ended without finish ({finish})"
        except openai.RateLimitError as exc:
            return "refused" if exc.code == "insufficient_quota" else f"429 {exc.code}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    outcomes = await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()
    print(json.dumps({
        "completed": outcomes.count("completed"),
        "refused": outcomes.count("refused"),
        "other": [o for o in outcomes if o not in ("completed", "refused")][:5],
    }), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
