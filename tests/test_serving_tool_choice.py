"""Unit tests for the tool_choice helpers that patch 0004 adds to vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def ptc(patched_vllm: Path) -> Any:
    from vllm.entrypoints.openai import parser_tool_choice

    return parser_tool_choice


def request(tool_choice: Any) -> Any:
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest

    tools = [{"type": "function", "function": {"name": name, "parameters": {}}}
             for name in ("get_weather", "get_time")]
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}],
                                 tools=tools, tool_choice=tool_choice)


NAMED = {"type": "function", "function": {"name": "get_weather"}}


def delta(index: int, name: str | None = None, arguments: str | None = None) -> Any:
    from vllm.entrypoints.openai.protocol import (
        DeltaFunctionCall,
        DeltaMessage,
        DeltaToolCall,
    )

    function = DeltaFunctionCall(name=name, arguments=arguments)
    return DeltaMessage(tool_calls=[DeltaToolCall(index=index, function=function)])


@pytest.mark.parametrize(("engine", "calls", "named", "expected"), [
    ("length", True, False, "length"),
    ("length", False, False, "length"),
    ("stop", True, False, "tool_calls"),
    ("stop", False, False, "stop"),
    ("stop", True, True, "stop"),
    (None, False, False, "stop"),
])
def test_finish_reason(ptc: Any, engine: str | None, calls: bool, named: bool,
                       expected: str) -> None:
    assert ptc.finish_reason(engine, calls_made=calls, named=named) == expected


def test_parser_path_needs_the_opt_out_and_tools(ptc: Any) -> None:
    class OptedOut:
        supports_required_and_named = False

    class Default:
        pass

    assert ptc.parser_handles_tool_choice(request("required"), OptedOut)
    assert ptc.parser_handles_tool_choice(request(NAMED), OptedOut)
    assert ptc.parser_handles_tool_choice(request("none"), OptedOut)
    assert not ptc.parser_handles_tool_choice(request("auto"), OptedOut)
    assert not ptc.parser_handles_tool_choice(request("required"), Default)
    assert not ptc.parser_handles_tool_choice(request("required"), None)


def test_named_filter_drops_other_calls_and_renumbers(ptc: Any) -> None:
    keep = ptc.StreamedCallFilter(request(NAMED))

    first = keep(delta(0, "get_time", '{"city": "Oslo"}'))
    second = keep(delta(1, "get_weather", '{"location": '))
    rest = keep(delta(1, None, '"Oslo"}'))

    assert first is None
    assert [(c.index, c.function.name) for c in second.tool_calls] == [
        (0, "get_weather")]
    assert [(c.index, c.function.arguments) for c in rest.tool_calls] == [
        (0, '"Oslo"}')]
    assert keep.kept == 1


def test_none_filter_keeps_text_and_drops_every_call(ptc: Any) -> None:
    keep = ptc.StreamedCallFilter(request("none"))
    message = delta(0, "get_weather", "{}")
    message.content = "Sure."

    kept = keep(message)

    assert kept is not None and kept.content == "Sure." and kept.tool_calls == []
    assert keep.kept == 0


def test_auto_filter_is_inactive(ptc: Any) -> None:
    keep = ptc.StreamedCallFilter(request("auto"))
    message = delta(3, "get_time", "{}")

    assert not keep.active
    assert keep(message) is message


def test_cut_at_markup(ptc: Any) -> None:
    start = "<｜DSML｜tool_calls>"

    cut = ptc.cut_at_markup("Let me see.\n\n" + start + "\n<｜DSML｜invoke", start)
    assert cut == "Let me see."
    assert ptc.cut_at_markup(start + "junk", start) is None
    assert ptc.cut_at_markup("plain", start) == "plain"
    assert ptc.cut_at_markup(None, start) is None
