"""Operator checks against a live OpenAI-compatible DeepSeek-V4 server.

What an operator runs after `vllm serve` in the image: a plain answer without
reasoning, thinking at reasoning_effort high and max, a streamed tool call with no
DSML in the visible text, typed arguments, and tool_choice "required" and named,
streamed and not (the choices that used to fail with HTTP 400 under MTP with async
scheduling). The `openai` package is needed only here, and imported lazily.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dsv4patch.errors import PatchError

MARKUP = ("DSML", "｜", "tool_calls>", "<invoke", "</think>", "<think>")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Reply:
    """One chat completion, streamed or not, reduced to what the checks read."""

    content: str
    reasoning: str
    calls: list[tuple[str, str]]
    finish_reason: str | None


def _tool(name: str, description: str, properties: dict[str, Any],
          required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties,
                       "required": required},
    }}


WEATHER = _tool("get_weather", "Get the current weather for a city.",
                {"location": {"type": "string", "description": "City name"}},
                ["location"])
TIME = _tool("get_time", "Get the current local time for a city.",
             {"city": {"type": "string"}}, ["city"])
SEATS = _tool("book_seats", "Book train seats.", {
    "count": {"type": "integer"},
    "window": {"type": "boolean"},
    "passengers": {"type": "array", "items": {"type": "string"}},
    "train": {"type": "string"},
}, ["count", "window", "passengers", "train"])

ARITHMETIC = "What is 17*19? Return only the final integer."
WEATHER_ASK = "What's the weather like in Beijing today?"
SEATS_ASK = "Book 2 window seats on train IC 512 for Alice and Bob."


class Prober:
    """Sends the probe prompts through one `openai` client."""

    def __init__(self, client: Any, model: str) -> None:
        self.client = client
        self.model = model

    def ask(self, question: str, stream: bool = False, **extra: Any) -> Reply:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            **extra,
        }
        if stream:
            return self._streamed(kwargs)
        choice = self.client.chat.completions.create(**kwargs).choices[0]
        message = choice.message
        calls = [(c.function.name, c.function.arguments)
                 for c in message.tool_calls or []]
        return Reply(message.content or "", _reasoning_of(message), calls,
                     choice.finish_reason)

    def _streamed(self, kwargs: dict[str, Any]) -> Reply:
        content, reasoning, finish = [], [], None
        calls: dict[int, list[str]] = {}
        for chunk in self.client.chat.completions.create(stream=True, **kwargs):
            for choice in chunk.choices:
                delta = choice.delta
                content.append(delta.content or "")
                reasoning.append(_reasoning_of(delta))
                for call in delta.tool_calls or []:
                    entry = calls.setdefault(call.index, ["", ""])
                    if call.function is not None:
                        entry[0] += call.function.name or ""
                        entry[1] += call.function.arguments or ""
                finish = choice.finish_reason or finish
        ordered = [(calls[i][0], calls[i][1]) for i in sorted(calls)]
        return Reply("".join(content), "".join(reasoning), ordered, finish)


def _reasoning_of(message: Any) -> str:
    extra = getattr(message, "model_extra", None) or {}
    return (getattr(message, "reasoning", None) or extra.get("reasoning")
            or extra.get("reasoning_content") or "")


def _answers_323(reply: Reply) -> bool:
    numbers = re.findall(r"-?\d+", reply.content)
    return bool(numbers) and numbers[-1] == "323"


def _visible_markup(reply: Reply) -> list[str]:
    return [m for m in MARKUP if m in reply.content]


def _parsed(arguments: str) -> dict[str, Any] | None:
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def check_plain(p: Prober) -> tuple[bool, str]:
    reply = p.ask(ARITHMETIC)
    if reply.reasoning:
        return False, f"unexpected reasoning: {reply.reasoning[:60]!r}"
    return _answers_323(reply), f"content {reply.content.strip()[:60]!r}"


def check_thinking(effort: str) -> Callable[[Prober], tuple[bool, str]]:
    def run(p: Prober) -> tuple[bool, str]:
        reply = p.ask(ARITHMETIC, reasoning_effort=effort,
                      extra_body={"chat_template_kwargs": {"thinking": True}})
        if not reply.reasoning:
            return False, f"no reasoning field; content {reply.content[:60]!r}"
        return (_answers_323(reply),
                f"{len(reply.reasoning)} chars of reasoning, content "
                f"{reply.content.strip()[:40]!r}")
    return run


def check_weather_streamed(p: Prober) -> tuple[bool, str]:
    reply = p.ask(WEATHER_ASK, stream=True, tools=[WEATHER], tool_choice="auto")
    leaked = _visible_markup(reply)
    if leaked:
        return False, f"markup {leaked} in content {reply.content[:80]!r}"
    if len(reply.calls) != 1:
        return False, f"{len(reply.calls)} calls: {reply.calls}"
    name, arguments = reply.calls[0]
    ok = name == "get_weather" and _parsed(arguments) == {"location": "Beijing"}
    return ok, f"{name}({arguments}), finish_reason {reply.finish_reason}"


def check_typed(stream: bool) -> Callable[[Prober], tuple[bool, str]]:
    def run(p: Prober) -> tuple[bool, str]:
        reply = p.ask(SEATS_ASK, stream=stream, tools=[SEATS], tool_choice="auto")
        if len(reply.calls) != 1:
            return False, f"{len(reply.calls)} calls: {reply.calls}"
        args = _parsed(reply.calls[0][1]) or {}
        kinds = {key: type(value).__name__ for key, value in args.items()}
        ok = (type(args.get("count")) is int and type(args.get("window")) is bool
              and isinstance(args.get("passengers"), list)
              and isinstance(args.get("train"), str))
        return ok, f"types {kinds}"
    return run


def check_forced(choice: Any, stream: bool) -> Callable[[Prober], tuple[bool, str]]:
    wanted = choice["function"]["name"] if isinstance(choice, dict) else None

    def run(p: Prober) -> tuple[bool, str]:
        reply = p.ask("What's the weather in Paris?", stream=stream,
                      tools=[WEATHER, TIME], tool_choice=choice)
        names = [name for name, _ in reply.calls]
        if not names:
            return False, f"no call; content {reply.content[:60]!r}"
        if wanted and set(names) != {wanted}:
            return False, f"calls {names}, expected only {wanted}"
        if _visible_markup(reply) or any(_parsed(a) is None for _, a in reply.calls):
            return False, f"markup or invalid arguments: {reply}"
        return True, f"{reply.calls}, finish_reason {reply.finish_reason}"
    return run


NAMED = {"type": "function", "function": {"name": "get_weather"}}
CHECKS: list[tuple[str, Callable[[Prober], tuple[bool, str]]]] = [
    ("plain-answer", check_plain),
    ("thinking-high", check_thinking("high")),
    ("thinking-max", check_thinking("max")),
    ("tool-call-streamed", check_weather_streamed),
    ("typed-arguments", check_typed(stream=False)),
    ("typed-arguments-streamed", check_typed(stream=True)),
    ("tool-choice-required", check_forced("required", stream=False)),
    ("tool-choice-required-streamed", check_forced("required", stream=True)),
    ("tool-choice-named", check_forced(NAMED, stream=False)),
    ("tool-choice-named-streamed", check_forced(NAMED, stream=True)),
]


def _client(url: str, api_key: str | None, timeout: float) -> Any:
    try:
        import openai
    except ImportError as exc:
        raise PatchError("`dsv4patch probe` needs the openai package",
                         hint="pip install openai") from exc
    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return openai.OpenAI(base_url=base, api_key=api_key or "EMPTY", timeout=timeout,
                         max_retries=0)


def _failure(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    text = message or str(exc)
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"


def run(url: str, model: str, api_key: str | None, timeout: float) -> list[Check]:
    """Run every check against the server at `url`; one Check per row."""
    prober = Prober(_client(url, api_key, timeout), model)
    checks = []
    for name, check in CHECKS:
        try:
            passed, detail = check(prober)
        except Exception as exc:  # a failed request is a failed check, not a crash
            passed, detail = False, _failure(exc)
        checks.append(Check(name, passed, " ".join(detail.split())[:160]))
    return checks
