"""End to end through HTTP: the deepseek_v4 parsers' policies for odd output.

DSML mentioned inside reasoning, values that are not strict JSON, very deep
nesting and prefix continuation, each through the patched server (see
tests/test_e2e_serving.py for the set-up), streamed and not.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from dsv4patch import probe
from tests.harness.launch import MODEL_NAME, HarnessServer
from tests.test_e2e_serving import collect

ASK = [{"role": "user", "content": "Weather in Oslo?"}]
TOOLS = [probe.WEATHER, probe.TIME]
THINKING = {"extra_body": {"chat_template_kwargs": {"thinking": True}}}
MENTION = ('Plan: <｜DSML｜parameter name="x" string="true">v</｜DSML｜parameter>'
           " more</think>Answer is 4.")


def weather_call(days: str) -> str:
    return (
        '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="location" string="true">Oslo</｜DSML｜parameter>\n'
        f'<｜DSML｜parameter name="days" string="false">{days}</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
    )


def both(server: HarnessServer, client: openai.OpenAI, text: str,
         **request: Any) -> dict[str, Any]:
    """The non-streamed result, checked equal to the one-token-per-step stream."""
    server.push_script(text)
    whole = collect(client, False, **request)
    server.push_script(text, steps="token")
    streamed = collect(client, True, **request)
    assert streamed == whole
    return whole


@pytest.mark.parametrize("tools", [None, TOOLS], ids=["no-tools", "tools"])
def test_dsml_markup_in_reasoning_stays_out_of_the_answer(
        server: HarnessServer, client: openai.OpenAI, tools: Any) -> None:
    extra = {"tools": tools} if tools else {}
    got = both(server, client, MENTION, messages=ASK, **THINKING, **extra)
    assert (got["reasoning"], got["content"]) == ("Plan: v more", "Answer is 4.")
    assert got["tool_calls"] == [] and got["finish_reason"] == "stop"


def test_a_bare_marker_in_reasoning_keeps_the_answer(
        server: HarnessServer, client: openai.OpenAI) -> None:
    text = "I could use <｜DSML｜invoke but no.</think>Answer is 4."
    got = both(server, client, text, messages=ASK, tools=TOOLS, **THINKING)
    assert got["content"] == "Answer is 4."
    assert got["reasoning"] == "I could use invoke but no."


def test_a_block_in_reasoning_still_ends_it(
        server: HarnessServer, client: openai.OpenAI) -> None:
    got = both(server, client, "Let me check." + weather_call("2"), messages=ASK,
               tools=TOOLS, **THINKING)
    assert got["reasoning"] == "Let me check."
    assert got["tool_calls"] == [("get_weather", {"location": "Oslo", "days": 2})]


@pytest.mark.parametrize("days", ["1e400", "[1e999, -1e999]", "-Infinity"])
def test_arguments_are_strict_json(server: HarnessServer, client: openai.OpenAI,
                                   days: str) -> None:
    server.push_script(weather_call(days))
    message = client.chat.completions.create(
        model=MODEL_NAME, messages=ASK, tools=TOOLS).choices[0].message
    arguments = message.tool_calls[0].function.arguments
    # Not JSON, and "days" is not in the schema: the text stays a string.
    assert json.loads(arguments, parse_constant=pytest.fail) == {
        "location": "Oslo", "days": days}

    got = both(server, client, weather_call(days), messages=ASK, tools=TOOLS)
    assert got["tool_calls"] == [("get_weather", {"location": "Oslo", "days": days})]


def test_deep_nesting_is_a_whole_call_and_no_markup(
        server: HarnessServer, client: openai.OpenAI) -> None:
    deep = "[" * 1200 + "]" * 1200
    got = both(server, client, "Before." + weather_call(deep), messages=ASK,
               tools=TOOLS)
    assert got["content"] == "Before."
    assert got["tool_calls"] == [("get_weather", {"location": "Oslo", "days": deep})]
    assert got["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("tools", [None, TOOLS], ids=["no-tools", "tools"])
def test_prefix_continuation_after_closed_reasoning_is_content(
        server: HarnessServer, client: openai.OpenAI, tools: Any) -> None:
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "The", "prefix": True}]
    extra = {"tools": tools} if tools else {}
    server.push_script(" answer is 4.")
    got = collect(client, False, messages=messages, **THINKING, **extra)
    assert server.requests()[-1]["prompt_text"].endswith("<think></think>The")
    assert (got["reasoning"], got["content"]) == (None, " answer is 4.")

    if tools:
        # serving_chat checks the prompt first when a tool parser runs.
        server.push_script(" answer is 4.", steps="token")
        streamed = collect(client, True, messages=messages, **THINKING, **extra)
        assert (streamed["reasoning"], streamed["content"]) == (None, " answer is 4.")
