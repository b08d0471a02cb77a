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


def test_a_request_without_tools_goes_through_an_opted_out_parser(ptc: Any) -> None:
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest

    class OptedOut:
        supports_required_and_named = False

    bare = ChatCompletionRequest(model="m",
                                 messages=[{"role": "user", "content": "x"}])

    assert ptc.parser_handles_tool_choice(bare, OptedOut)
    assert not ptc.parser_handles_tool_choice(bare, object)
    assert ptc.drops_all_calls(bare)
    assert ptc.StreamedCallFilter(bare)(delta(0, "get_weather", "{}")) is None


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


def test_merge_keeps_text_in_order_and_joins_a_call(ptc: Any) -> None:
    from vllm.entrypoints.openai.protocol import DeltaMessage

    first = delta(0, "get_weather", "")
    first.tool_calls[0].id = "call_1"
    first.content, first.reasoning = "Sure", "think"
    second = delta(0, None, '{"location": "Oslo"}')
    second.tool_calls += delta(1, "get_time", "{").tool_calls
    second.content = ", checking."

    merged = ptc.merge_deltas(first, second)

    assert (merged.reasoning, merged.content) == ("think", "Sure, checking.")
    assert [(c.index, c.id, c.function.name, c.function.arguments)
            for c in merged.tool_calls] == [
        (0, "call_1", "get_weather", '{"location": "Oslo"}'),
        (1, None, "get_time", "{")]
    assert first.tool_calls[0].function.arguments == ""
    assert ptc.merge_deltas(None, first) is first
    assert ptc.merge_deltas(first, None) is first
    assert "tool_calls" not in ptc.merge_deltas(
        DeltaMessage(content="a"), DeltaMessage(reasoning="b")).model_dump(
            exclude_unset=True)


@pytest.mark.parametrize(("expected", "streamed", "rest"), [
    ('{"a": 1}', '{"a": ', "1}"),
    ('{"a": 1}', "", '{"a": 1}'),
    ('{"a": 1}', '{"a": 1}', None),
    ("{}", '{"path": "a', None),
    ('{"a": 1}', '{"b"', None),
])
def test_unstreamed_arguments_only_complete_a_prefix(
        ptc: Any, expected: str, streamed: str, rest: str | None) -> None:
    assert ptc.unstreamed_arguments(expected, streamed) == rest


def test_streamed_calls_count_only_whole_calls(ptc: Any) -> None:
    calls = ptc.StreamedCalls()

    calls.add(delta(0, "write_file", ""))
    calls.add(delta(0, None, '{"path": "a'))
    calls.add(delta(1, "get_time", ""))
    calls.add(delta(1, None, '{"city": "Oslo"}'))
    calls.add(delta(2, None, "{}"))
    calls.add(None)

    assert calls.complete() == 1


@pytest.fixture(scope="module")
def v4_tokenizer(patched_vllm: Path, model_path: Path) -> Any:
    from tests.support import parser_driver

    return parser_driver.load_tokenizer(model_path)


def test_content_flushed_by_the_reasoning_parser_goes_through_the_tool_parser(
        ptc: Any, v4_tokenizer: Any) -> None:
    from vllm.entrypoints.openai.protocol import DeltaMessage
    from vllm.entrypoints.openai.serving_chat import OpenAIServingChat
    from vllm.reasoning import ReasoningParser
    from vllm.tool_parsers import ToolParserManager

    held = ('\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_time">\n'
            '<｜DSML｜parameter name="city" string="true">Oslo</｜DSML｜parameter>\n'
            '</｜DSML｜invoke>\n</｜DSML｜tool_calls>')

    class HoldsTheTail(ReasoningParser):
        """Stands for a reasoning parser that held the last text back."""

        def is_reasoning_end(self, input_ids: Any) -> bool:
            return True

        def extract_content_ids(self, input_ids: Any) -> Any:
            return input_ids

        def extract_reasoning(self, model_output: str, request: Any) -> Any:
            return None, model_output

        def extract_reasoning_streaming(self, *args: Any) -> Any:
            return None

        def finish_streaming(self) -> Any:
            return DeltaMessage(reasoning="tail", content=held)

    tool_cls = ToolParserManager.get_tool_parser("deepseek_v4")
    for choice, names in (("auto", ["get_time"]), ("none", [])):
        req = request(choice)
        tool_parser = tool_cls(v4_tokenizer)
        tool_parser.extract_tool_calls_streaming(
            "", "Sure.", "Sure.", [], [], [], request=req)

        flushed = OpenAIServingChat._finish_streaming_parsers(
            HoldsTheTail(v4_tokenizer), tool_parser, ptc.StreamedCallFilter(req),
            "Sure.", req)

        assert flushed.reasoning == "tail"
        assert "DSML" not in (flushed.content or "")
        assert [c.function.name for c in flushed.tool_calls] == names
        if names:
            assert flushed.tool_calls[0].function.arguments == '{"city": "Oslo"}'


def test_no_arguments_are_guessed_for_a_parser_that_flushes_itself(
        v4_tokenizer: Any) -> None:
    from vllm.entrypoints.openai.serving_chat import OpenAIServingChat
    from vllm.tool_parsers import ToolParser, ToolParserManager

    tool_cls = ToolParserManager.get_tool_parser("deepseek_v4")

    class FlushesItself(tool_cls):  # type: ignore[misc, valid-type]
        def finish_streaming(self) -> Any:
            return None

    class WithoutTheHook(tool_cls):  # type: ignore[misc, valid-type]
        finish_streaming = ToolParser.finish_streaming

    for cls, expected in ((WithoutTheHook, '{"a": 1}'), (FlushesItself, None)):
        parser = cls(v4_tokenizer)
        # A call the parser recorded in full but streamed only in part, as
        # parsers with partial-JSON look-behind do.
        parser.prev_tool_call_arr = [{"name": "f", "arguments": {"a": 1}}]
        parser.streamed_args_for_tool = [""]

        rest = OpenAIServingChat._unstreamed_tool_arguments(parser)

        got = rest.tool_calls[0].function.arguments if rest else None
        assert got == expected
