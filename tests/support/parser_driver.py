"""Drive the deepseek_v4 parsers the way vLLM's serving_chat does.

`stream` mirrors the per-delta loop of the patched serving_chat for one choice:
the reasoning parser first (asked `is_reasoning_end` on the prompt and on each
delta), then, once the reasoning is over, the tool parser on the content, with
the same previous/current text and token-id bookkeeping, the reasoning tail
kept when one delta ends the reasoning and starts a call, and the parsers'
`finish_streaming` when the engine ends the stream. `complete` mirrors the non-streaming path.

Everything here calls the real parser classes from vLLM's registries.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

EOS = "<｜end▁of▁sentence｜>"
DSML_MARK = "｜DSML｜"
THINK_MARKS = ("<think>", "</think>")
SPECIAL_TEXTS = (EOS, "<｜begin▁of▁sentence｜>")


@dataclass
class Parsed:
    """What a client ends up with, streamed or not."""

    reasoning: str
    content: str
    calls: list[dict[str, Any]]
    incomplete_calls: list[dict[str, Any]] = field(default_factory=list)
    deltas: list[Any] = field(default_factory=list)
    arguments_fragments: dict[int, list[str]] = field(default_factory=dict)

    def normalized(self) -> dict[str, Any]:
        """The comparable view: whitespace-only text counts as empty."""
        return {
            "reasoning": self.reasoning if self.reasoning.strip() else "",
            "content": self.content if self.content.strip() else "",
            "calls": [
                {"name": c["name"], "arguments": json.loads(c["arguments"])}
                for c in self.calls
            ],
        }


def parser_classes() -> tuple[type, type]:
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    return (
        ReasoningParserManager.get_reasoning_parser("deepseek_v4"),
        ToolParserManager.get_tool_parser("deepseek_v4"),
    )


def make_request(fields: dict[str, Any]) -> Any:
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest

    body = {"model": "deepseek-v4", "messages": [{"role": "user", "content": "hi"}]}
    body.update({k: v for k, v in fields.items() if v is not None})
    if not body.get("tools"):
        body.pop("tools", None)
        body.pop("tool_choice", None)
    return ChatCompletionRequest(**body)


def uses_tool_parser(request: Any) -> bool:
    """serving_chat runs the tool parser for these requests (patch 0004)."""
    return bool(request.tools) and request.tool_choice is not None


def prompt_ids(tokenizer: Any, request: Any) -> list[int]:
    """Token ids of a prompt ending the way the encoder ends it."""
    from vllm.tokenizers.deepseek_v4_encoding import thinking_requested

    think = (
        "<think>" if thinking_requested(request.chat_template_kwargs) else "</think>"
    )
    text = f"<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>{think}"
    return tokenizer.encode(text, add_special_tokens=False)


def text_steps(
    tokenizer: Any, chunks: Sequence[str], eos_step: bool
) -> list[tuple[str, list[int]]]:
    """(delta_text, delta_token_ids) for text chunks; "" is an EOS-only step."""
    steps = []
    for chunk in chunks:
        if chunk == "":
            steps.append(("", [tokenizer.eos_token_id]))
        else:
            steps.append((chunk, tokenizer.encode(chunk, add_special_tokens=False)))
    if eos_step and (not chunks or chunks[-1] != ""):
        steps.append(("", [tokenizer.eos_token_id]))
    return steps


def chunked(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def token_steps(
    tokenizer: Any, text: str, rng: random.Random | None, eos_step: bool
) -> list[tuple[str, list[int]]]:
    """Deltas as the engine makes them: 1 token each, or 1-4 with `rng` (MTP).

    Like vLLM's detokenizer, a step whose tokens end inside a multi-byte
    character has empty text; the text follows with the next step.
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    steps: list[tuple[str, list[int]]] = []
    undecoded: list[int] = []
    pos = 0
    while pos < len(ids):
        group = ids[pos : pos + (rng.randint(1, 4) if rng else 1)]
        pos += len(group)
        undecoded.extend(group)
        decoded = tokenizer.decode(undecoded, skip_special_tokens=False)
        if decoded.endswith("\ufffd") and pos < len(ids):
            steps.append(("", group))
            continue
        steps.append((decoded, group))
        undecoded = []
    assert "".join(t for t, _ in steps) == tokenizer.decode(
        ids, skip_special_tokens=False
    )
    if eos_step:
        steps.append(("", [tokenizer.eos_token_id]))
    return steps


def complete(tokenizer: Any, request: Any, output: str) -> Parsed:
    """The non-streaming path: extract_reasoning, then extract_tool_calls."""
    reasoning_cls, tool_cls = parser_classes()
    reasoning_parser = reasoning_cls(
        tokenizer, chat_template_kwargs=request.chat_template_kwargs
    )
    reasoning, content = reasoning_parser.extract_reasoning(output, request=request)

    calls: list[dict[str, Any]] = []
    if uses_tool_parser(request):
        info = tool_cls(tokenizer).extract_tool_calls(content or "", request=request)
        if info.tools_called:
            content = info.content
            for call in info.tool_calls:
                assert call.id.startswith("call_") and call.type == "function"
                calls.append(
                    {
                        "id": call.id,
                        "name": call.function.name,
                        "arguments": call.function.arguments,
                    }
                )
    return Parsed(reasoning or "", content or "", calls)


class _Client:
    """Rebuilds the message from streamed deltas as an OpenAI client does."""

    def __init__(self) -> None:
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.fragments: dict[int, list[str]] = {}
        self.deltas: list[Any] = []

    def receive(self, delta: Any) -> None:
        if delta is None:
            return
        self.deltas.append(delta)
        self.reasoning.append(delta.reasoning or "")
        self.content.append(delta.content or "")
        for tool_call in delta.tool_calls:
            self._receive_call(tool_call)

    def _receive_call(self, tool_call: Any) -> None:
        function = tool_call.function
        if isinstance(function, dict):
            name, arguments = function.get("name"), function.get("arguments")
        else:
            name = function.name if function else None
            arguments = function.arguments if function else None

        call = self.calls.get(tool_call.index)
        if call is None:
            # The first delta of a call carries its id, type and name.
            assert tool_call.id and tool_call.type == "function" and name
            call = {"id": tool_call.id, "name": name, "arguments": ""}
            self.calls[tool_call.index] = call
            self.fragments[tool_call.index] = []
        else:
            assert tool_call.id is None and name is None
        if arguments:
            call["arguments"] += arguments
            self.fragments[tool_call.index].append(arguments)

    def result(self) -> Parsed:
        complete_calls, incomplete = [], []
        for index in sorted(self.calls):
            call = self.calls[index]
            try:
                json.loads(call["arguments"])
                complete_calls.append(call)
            except ValueError:
                incomplete.append(call)
        return Parsed(
            "".join(self.reasoning),
            "".join(self.content),
            complete_calls,
            incomplete,
            self.deltas,
            self.fragments,
        )


def stream(
    tokenizer: Any,
    request: Any,
    steps: Sequence[tuple[str, list[int]]],
    tool_parser: Any = None,
    finish_reason: str | None = "stop",
) -> Parsed:
    """The streaming path of serving_chat for one choice, step by step.

    `finish_reason` is the engine's; any reason (EOS, a stop string, length)
    ends the stream with the parsers' `finish_streaming`, None leaves the
    stream open.
    """
    from vllm.entrypoints.openai.protocol import DeltaMessage

    reasoning_cls, tool_cls = parser_classes()
    reasoning_parser = reasoning_cls(
        tokenizer, chat_template_kwargs=request.chat_template_kwargs
    )
    with_tools = uses_tool_parser(request)
    if with_tools and tool_parser is None:
        tool_parser = tool_cls(tokenizer)
    prompt = prompt_ids(tokenizer, request)

    client = _Client()
    previous_text, previous_ids = "", []
    reasoning_ended, content_handed_over = False, False
    for delta_text, delta_ids in steps:
        current_text = previous_text + delta_text
        current_ids = previous_ids + list(delta_ids)

        if not with_tools:
            delta = reasoning_parser.extract_reasoning_streaming(
                previous_text,
                current_text,
                delta_text,
                previous_ids,
                current_ids,
                delta_ids,
            )
        else:
            reasoning_tail = None
            delta = None
            if not reasoning_ended:
                if reasoning_parser.is_reasoning_end(prompt):
                    reasoning_ended = True
                    current_ids = list(delta_ids)
                else:
                    delta = reasoning_parser.extract_reasoning_streaming(
                        previous_text,
                        current_text,
                        delta_text,
                        previous_ids,
                        current_ids,
                        delta_ids,
                    )
                    if reasoning_parser.is_reasoning_end(list(delta_ids)):
                        reasoning_ended = True
                        current_ids = reasoning_parser.extract_content_ids(
                            list(delta_ids)
                        )
                        reasoning_tail = delta.reasoning if delta else None
                        current_text = delta.content if delta and delta.content else ""
                        if delta:
                            delta.content = None

            if reasoning_ended:
                tool_delta_text, tool_delta_ids = delta_text, list(delta_ids)
                if not content_handed_over:
                    content_handed_over = True
                    previous_text, previous_ids = "", []
                    tool_delta_text, tool_delta_ids = current_text, current_ids
                delta = tool_parser.extract_tool_calls_streaming(
                    previous_text=previous_text,
                    current_text=current_text,
                    delta_text=tool_delta_text,
                    previous_token_ids=previous_ids,
                    current_token_ids=current_ids,
                    delta_token_ids=tool_delta_ids,
                    request=request,
                )
                if reasoning_tail:
                    delta = DeltaMessage(
                        reasoning=reasoning_tail,
                        content=delta and delta.content,
                        tool_calls=delta.tool_calls if delta else [],
                    )

        client.receive(delta)
        previous_text, previous_ids = current_text, current_ids

    if finish_reason is not None:
        tool_text = previous_text if content_handed_over else ""
        for delta in _finish(reasoning_parser, tool_parser, tool_text, request):
            client.receive(delta)

    result = client.result()
    if with_tools:
        _check_parser_records(tool_parser, client)
    return result


def _finish(
    reasoning_parser: Any, tool_parser: Any, tool_text: str, request: Any
) -> list[Any]:
    """serving_chat's end of a stream: what each parser held back.

    Content the reasoning parser releases here is output the tool parser has
    not seen yet, so it goes through the tool parser before that one ends.
    """
    from vllm.entrypoints.openai.protocol import DeltaMessage

    flushed = reasoning_parser.finish_streaming()
    if tool_parser is None:
        return [flushed]

    deltas = []
    held = flushed.content if flushed is not None else None
    if held:
        deltas.append(DeltaMessage(reasoning=flushed.reasoning))
        deltas.append(
            tool_parser.extract_tool_calls_streaming(
                previous_text=tool_text,
                current_text=tool_text + held,
                delta_text=held,
                previous_token_ids=[],
                current_token_ids=[],
                delta_token_ids=[],
                request=request,
            )
        )
    else:
        deltas.append(flushed)
    deltas.append(tool_parser.finish_streaming())
    return deltas


def _check_parser_records(tool_parser: Any, client: _Client) -> None:
    """serving_chat relies on these records to finish the stream correctly."""
    assert len(tool_parser.prev_tool_call_arr) == len(client.calls)
    for index, call in client.calls.items():
        record = tool_parser.prev_tool_call_arr[index]
        assert record["name"] == call["name"]
        assert tool_parser.streamed_args_for_tool[index] == call["arguments"]
        try:
            parsed = json.loads(call["arguments"])
        except ValueError:
            continue
        assert record["arguments"] == parsed
        assert json.dumps(parsed, ensure_ascii=False) == call["arguments"]


def leaks(text: str) -> list[str]:
    """Markup that must never reach a client's content, reasoning or arguments."""
    found = [mark for mark in (DSML_MARK, *SPECIAL_TEXTS) if mark in text]
    return found


def partial_markup_tail(text: str) -> bool:
    """Whether `text` ends in what looks like the start of a DSML tag.

    Two characters ("<｜") are still ordinary text; from three on ("<｜D",
    "</｜") the parsers treat a fragment cut off at the end as markup.
    """
    for mark in ("<｜DSML｜", "</｜DSML｜"):
        for size in range(3, len(mark)):
            if text.endswith(mark[:size]):
                return True
    return False


_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer(model_path: Any) -> Any:
    """vLLM's tokenizer for the test model directory, loaded once per session."""
    import os

    key = str(model_path)
    if key not in _TOKENIZERS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from vllm.tokenizers import get_tokenizer

        _TOKENIZERS[key] = get_tokenizer(key)
    return _TOKENIZERS[key]


def special_token_interiors(text: str) -> set[int]:
    """Cut positions that fall inside a special token's text.

    BOS, EOS, <think> and </think> are single tokens, so vLLM's detokenizer
    never splits their text across two deltas.
    """
    inside: set[int] = set()
    for mark in (*SPECIAL_TEXTS, *THINK_MARKS):
        start = text.find(mark)
        while start != -1:
            inside.update(range(start + 1, start + len(mark)))
            start = text.find(mark, start + 1)
    return inside


def serving_finish_reason(request: Any, engine_reason: str, calls: list) -> str:
    """The finish_reason rule of the patched serving layer (patch 0004)."""
    if engine_reason == "length":
        return "length"
    named = not isinstance(request.tool_choice, str) and request.tool_choice
    if calls and not named:
        return "tool_calls"
    return engine_reason
