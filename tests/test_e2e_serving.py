"""End to end through HTTP: the patched vLLM server on the operators' launch line.

The server is vLLM's own OpenAI app from the session's patched tree, with the MTP
speculative config and async scheduling; only the engine is scripted (see
tests/harness). Requests go through the real `openai` client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from dsv4patch import probe
from tests.harness.launch import MODEL_NAME, PATCHED_FLAGS, HarnessServer
from tests.support.trees import SHARED

CASES = {
    case["id"]: case
    for case in json.loads(
        (SHARED / "cases" / "parser-cases.json").read_text("utf-8"))
}
DSML_CALL = (
    '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="{name}">\n'
    '<｜DSML｜parameter name="{key}" string="true">{value}</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)
WEATHER_CALL = DSML_CALL.format(name="get_weather", key="location", value="Oslo")


@pytest.fixture(scope="module")
def probe_results(server: HarnessServer) -> dict[str, probe.Check]:
    checks = probe.run(server.url + "/v1", MODEL_NAME, None, 60.0)
    return {check.name: check for check in checks}


@pytest.fixture(scope="module")
def probe_results_one_token_steps(
        patched_vllm: Path, model_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, probe.Check]:
    log = tmp_path_factory.mktemp("e2e-token") / "server.log"
    with HarnessServer(model_path, PATCHED_FLAGS, log, vllm_tree=patched_vllm,
                       default_steps="token") as srv:
        checks = probe.run(srv.url + "/v1", MODEL_NAME, None, 60.0)
        assert {r["steps"] for r in srv.requests()} == {"token"}
    return {check.name: check for check in checks}


@pytest.mark.parametrize("name", [name for name, _ in probe.CHECKS])
def test_operator_check_passes(probe_results: dict[str, probe.Check],
                               name: str) -> None:
    check = probe_results[name]
    assert check.passed, check.detail


@pytest.mark.parametrize("name", [name for name, _ in probe.CHECKS])
def test_operator_check_passes_one_token_per_step(
        probe_results_one_token_steps: dict[str, probe.Check], name: str) -> None:
    check = probe_results_one_token_steps[name]
    assert check.passed, check.detail


def test_no_structured_outputs_requested(probe_results: dict[str, probe.Check],
                                         server: HarnessServer) -> None:
    recorded = server.requests()
    assert len(recorded) >= len(probe.CHECKS)
    assert [r["structured_outputs"] for r in recorded] == [None] * len(recorded)


def test_reasoning_effort_max_reaches_the_encoder(
        probe_results: dict[str, probe.Check], server: HarnessServer) -> None:
    prompts = [r["prompt_text"] for r in server.requests()]
    with_preamble = [p for p in prompts if "Reasoning Effort: Absolute maximum" in p]
    assert len(with_preamble) == 1
    assert with_preamble[0].endswith("<think>")


def collect(client: openai.OpenAI, stream: bool, **request: Any) -> dict[str, Any]:
    """One completion, streamed or not, as reasoning/content/calls/finish_reason."""
    request = {"model": MODEL_NAME, "temperature": 0, **request}
    if not stream:
        choice = client.chat.completions.create(**request).choices[0]
        extra = choice.message.model_extra or {}
        return {
            "reasoning": extra.get("reasoning") or None,
            "content": choice.message.content or None,
            "tool_calls": [(c.function.name, json.loads(c.function.arguments))
                           for c in choice.message.tool_calls or []],
            "finish_reason": choice.finish_reason,
        }
    reasoning, content, calls, finishes = "", "", {}, []
    for chunk in client.chat.completions.create(stream=True, **request):
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            reasoning += extra.get("reasoning") or ""
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, ["", ""])
                entry[0] += (call.function and call.function.name) or ""
                entry[1] += (call.function and call.function.arguments) or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert len(finishes) == 1, f"finish_reason sent {len(finishes)} times"
    return {
        "reasoning": reasoning or None,
        "content": content if content.strip() else None,
        "tool_calls": [(calls[i][0], json.loads(calls[i][1])) for i in sorted(calls)],
        "finish_reason": finishes[0],
    }


def case_request(case: dict[str, Any]) -> dict[str, Any]:
    request = {key: value for key, value in case["request"].items() if key != "stream"}
    kwargs = request.pop("chat_template_kwargs", None)
    if kwargs:
        request["extra_body"] = {"chat_template_kwargs": kwargs}
    request["messages"] = [{"role": "user", "content": "Go."}]
    return request


@pytest.mark.parametrize("case_id", [
    "b43-named-choice-dsml", "b43s-named-choice-dsml-stream",
    "b46-required-parallel-stream", "b52-deep-effort-no-action",
    "b37-mtp-delta-spans-think-close-and-tool",
])
@pytest.mark.parametrize("steps", ["token", "mtp", "chunks"])
def test_parser_case_through_http(server: HarnessServer, client: openai.OpenAI,
                                  case_id: str, steps: str) -> None:
    case = CASES[case_id]
    output = case["model_output"]
    if steps == "chunks":
        if isinstance(output, str):
            size = case.get("stream_chunk_chars", [7])[0]
            output = [output[i:i + size] for i in range(0, len(output), size)]
        server.push_script(output)
    else:
        server.push_script("".join(output) if isinstance(output, list) else output,
                           steps=steps)

    got = collect(client, case["request"].get("stream", False), **case_request(case))

    expected = case["expected"]
    assert got["reasoning"] == expected["reasoning"]
    assert got["content"] == (expected["content"] or None)
    assert got["tool_calls"] == [(c["name"], c["arguments"])
                                 for c in expected["tool_calls"]]
    assert got["finish_reason"] == expected["finish_reason"]
    assert server.requests()[-1]["structured_outputs"] is None


WEATHER_TOOLS = [probe.WEATHER, probe.TIME]
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
def test_length_wins_over_a_call_cut_short(server: HarnessServer,
                                           client: openai.OpenAI, stream: bool) -> None:
    server.push_script(WEATHER_CALL, steps="token")

    got = collect(client, stream, messages=ASK, tools=WEATHER_TOOLS,
                  tool_choice="required", max_tokens=12)

    assert got["finish_reason"] == "length"
    assert got["tool_calls"] == []


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
def test_tool_choice_none_never_shows_dsml(server: HarnessServer,
                                           client: openai.OpenAI, stream: bool) -> None:
    server.push_script("Let me check." + WEATHER_CALL)

    got = collect(client, stream, messages=ASK, tools=WEATHER_TOOLS,
                  tool_choice="none")

    assert got["tool_calls"] == []
    assert got["content"] is not None and got["content"].strip() == "Let me check."
    assert got["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
def test_named_choice_returns_only_the_named_function(
        server: HarnessServer, client: openai.OpenAI, stream: bool) -> None:
    time_call = DSML_CALL.format(name="get_time", key="city", value="Oslo")
    weather = WEATHER_CALL.split("<｜DSML｜tool_calls>\n", 1)[1]
    both = time_call.replace("</｜DSML｜tool_calls>", weather)
    server.push_script(both)

    got = collect(client, stream, messages=ASK, tools=WEATHER_TOOLS,
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})

    assert got["tool_calls"] == [("get_weather", {"location": "Oslo"})]
    assert got["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
def test_required_without_a_call_reports_stop(server: HarnessServer,
                                              client: openai.OpenAI,
                                              stream: bool) -> None:
    server.push_script("I cannot look that up.")

    got = collect(client, stream, messages=ASK, tools=WEATHER_TOOLS,
                  tool_choice="required")

    assert got["tool_calls"] == []
    assert got["content"] == "I cannot look that up."
    assert got["finish_reason"] == "stop"


@pytest.mark.parametrize(("extra", "named"), [
    ({"presence_penalty": 0.5}, "presence_penalty=0.5"),
    ({"frequency_penalty": 0.2}, "frequency_penalty=0.2"),
    ({"response_format": {"type": "json_object"}}, "structured outputs"),
], ids=["presence", "frequency", "response-format"])
def test_unservable_request_gets_a_400_that_says_why(
        client: openai.OpenAI, extra: dict[str, Any], named: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=ASK, **extra)

    message = str(info.value)
    assert named in message
    assert "--async-scheduling" in message


def test_two_streamed_choices_keep_their_own_parser_state(
        server: HarnessServer, client: openai.OpenAI) -> None:
    server.push_script("Look it up.</think>" + WEATHER_CALL)
    server.push_script("No tool needed.</think>It is sunny in Oslo.")

    choices: dict[int, dict[str, Any]] = {}
    for chunk in client.chat.completions.create(
            model=MODEL_NAME, messages=ASK, tools=WEATHER_TOOLS, n=2, stream=True,
            extra_body={"chat_template_kwargs": {"thinking": True}}):
        for choice in chunk.choices:
            got = choices.setdefault(choice.index, {
                "reasoning": "", "content": "", "calls": [], "finish": None})
            got["reasoning"] += (choice.delta.model_extra or {}).get("reasoning") or ""
            got["content"] += choice.delta.content or ""
            got["calls"] += [c.function.name for c in choice.delta.tool_calls or []
                             if c.function and c.function.name]
            got["finish"] = choice.finish_reason or got["finish"]

    by_reasoning = {got["reasoning"]: got for got in choices.values()}
    called = by_reasoning["Look it up."]
    answered = by_reasoning["No tool needed."]
    assert (called["calls"], called["finish"]) == (["get_weather"], "tool_calls")
    assert (answered["content"], answered["finish"]) == ("It is sunny in Oslo.", "stop")
    assert answered["calls"] == [] and not called["content"].strip()


# The end of a stream: the last engine step, stop strings, max_tokens.

EOS = "<｜end▁of▁sentence｜>"
THINKING = {"extra_body": {"chat_template_kwargs": {"thinking": True}}}
WRITE_TOOLS = [{"type": "function", "function": {
    "name": "write_file",
    "parameters": {"type": "object", "properties": {
        "path": {"type": "string"}, "content": {"type": "string"}}}}}]


def dsml_invoke(name: str, **params: str) -> str:
    lines = [f'<｜DSML｜invoke name="{name}">']
    lines += [f'<｜DSML｜parameter name="{key}" string="true">{value}</｜DSML｜parameter>'
              for key, value in params.items()]
    return "\n".join([*lines, "</｜DSML｜invoke>"])


def dsml_block(*invokes: str) -> str:
    return "\n\n<｜DSML｜tool_calls>\n" + "\n".join(invokes) + "\n</｜DSML｜tool_calls>"


def stream_calls(client: openai.OpenAI, **request: Any) -> dict[str, Any]:
    """A streamed completion's calls as the client joins them, keeping every
    fragment's name and id, and its finish_reason."""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(model=MODEL_NAME, stream=True,
                                                **request):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": "", "name": "",
                                                      "arguments": ""})
                entry["id"] += call.id or ""
                entry["name"] += (call.function and call.function.name) or ""
                entry["arguments"] += (call.function and call.function.arguments) or ""
            finish = choice.finish_reason or finish
    return {"calls": [calls[i] for i in sorted(calls)], "finish_reason": finish}


@pytest.mark.parametrize(("chunks", "extra", "reasoning", "content"), [
    (["Sure", ", checking." + dsml_block(dsml_invoke("get_weather", location="Oslo"))
      + EOS], {}, None, "Sure, checking."),
    (["I should", " call it.</think>"
      + dsml_block(dsml_invoke("get_weather", location="Oslo")) + EOS],
     THINKING, "I should call it.", None),
], ids=["content", "reasoning"])
@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_last_step_with_a_call_header_loses_nothing(
        server: HarnessServer, client: openai.OpenAI, chunks: list[str],
        extra: dict[str, Any], reasoning: str | None, content: str | None,
        tool_choice: str) -> None:
    server.push_script(chunks, eos=False)

    got = collect(client, True, messages=ASK, tools=WEATHER_TOOLS,
                  tool_choice=tool_choice, **extra)

    assert got["tool_calls"] == [("get_weather", {"location": "Oslo"})]
    assert (got["reasoning"], got["content"]) == (reasoning, content)
    assert got["finish_reason"] == "tool_calls"


def test_last_step_that_opens_the_second_call_keeps_its_header(
        server: HarnessServer, client: openai.OpenAI) -> None:
    second = dsml_invoke("get_time", city="Oslo")
    whole = dsml_block(dsml_invoke("get_weather", location="Oslo"), second)
    head, tail = whole.split(second)
    server.push_script([head, second + tail + EOS], eos=False)

    got = stream_calls(client, messages=ASK, tools=WEATHER_TOOLS)

    assert [(c["name"], json.loads(c["arguments"])) for c in got["calls"]] == [
        ("get_weather", {"location": "Oslo"}), ("get_time", {"city": "Oslo"})]
    assert all(c["id"].startswith("call_") for c in got["calls"])
    assert got["finish_reason"] == "tool_calls"


def test_length_inside_a_call_sends_only_a_prefix_of_its_arguments(
        server: HarnessServer, client: openai.OpenAI, count_tokens: Any) -> None:
    text = dsml_block(dsml_invoke("write_file", path="a.txt", content="hello world"))
    full = json.dumps({"path": "a.txt", "content": "hello world"})
    open_until = count_tokens(text.split("</｜DSML｜invoke>")[0])

    for max_tokens in range(1, open_until + 1):
        server.push_script(text, steps="token")
        got = stream_calls(client, messages=ASK, tools=WRITE_TOOLS,
                           max_tokens=max_tokens)

        assert got["finish_reason"] == "length", max_tokens
        for call in got["calls"]:
            assert call["name"] == "write_file", (max_tokens, got)
            assert full.startswith(call["arguments"]), (max_tokens, got)
            assert call["arguments"] != full, (max_tokens, got)


@pytest.fixture(scope="module")
def count_tokens(model_path: Path) -> Any:
    """The number of tokens the scripted engine replays for a text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


STOP_INSIDE_A_CALL = "OK." + dsml_block(dsml_invoke(
    "write_file", path="n.md", content="Step 1\nObservation: ok\nStep 2"))


@pytest.mark.parametrize("steps", ["token", "mtp"])
def test_stop_string_inside_a_call_is_no_call(server: HarnessServer,
                                              client: openai.OpenAI,
                                              steps: str) -> None:
    request = {"messages": ASK, "tools": WRITE_TOOLS, "stop": ["Observation:"]}
    server.push_script(STOP_INSIDE_A_CALL, steps=steps)
    full = client.chat.completions.create(model=MODEL_NAME, **request).choices[0]
    server.push_script(STOP_INSIDE_A_CALL, steps=steps)
    streamed = stream_calls(client, **request)

    assert (full.finish_reason, full.message.tool_calls or []) == ("stop", [])
    assert streamed["finish_reason"] == "stop"
    for call in streamed["calls"]:
        with pytest.raises(ValueError):
            json.loads(call["arguments"])


def test_eos_inside_a_call_is_no_call(server: HarnessServer,
                                      client: openai.OpenAI) -> None:
    cut = STOP_INSIDE_A_CALL.split("Observation:")[0]
    for stream in (False, True):
        server.push_script(cut, steps="token")
        got = (stream_calls(client, messages=ASK, tools=WRITE_TOOLS) if stream else
               client.chat.completions.create(model=MODEL_NAME, messages=ASK,
                                              tools=WRITE_TOOLS).choices[0])
        finish = got["finish_reason"] if stream else got.finish_reason
        assert finish == "stop", stream


def test_stop_string_right_after_a_call_header_makes_up_no_arguments(
        server: HarnessServer, client: openai.OpenAI) -> None:
    text = "OK." + dsml_block(dsml_invoke("write_file", path="a.txt"))
    server.push_script(text, steps="token")

    got = stream_calls(client, messages=ASK, tools=WRITE_TOOLS,
                       stop=["<｜DSML｜parameter"])

    assert got["finish_reason"] == "stop"
    assert [call["arguments"] for call in got["calls"]] == [""]


@pytest.mark.parametrize(("text", "stop", "tools"), [
    ("if a <STOP b", ["STOP"], False),
    ("list: <｜END", ["END"], False),
    ("if a <STOP b", ["STOP"], True),
], ids=["angle", "fullwidth-bar", "angle-with-tools"])
def test_stop_string_keeps_the_text_held_back(
        server: HarnessServer, client: openai.OpenAI, text: str,
        stop: list[str], tools: bool) -> None:
    extra = {"tools": WEATHER_TOOLS} if tools else {}
    server.push_script(text, steps="token")
    full = collect(client, False, messages=ASK, stop=stop, **extra)
    server.push_script(text, steps="token")
    streamed = collect(client, True, messages=ASK, stop=stop, **extra)

    assert full["content"] == text.split(stop[0])[0]
    assert streamed == full


def test_length_keeps_the_text_held_back(server: HarnessServer,
                                         client: openai.OpenAI,
                                         count_tokens: Any) -> None:
    text = "Answer: x\n\n<｜"
    steps = count_tokens(text)
    server.push_script(text + " more", steps="token")
    full = collect(client, False, messages=ASK, max_tokens=steps)
    server.push_script(text + " more", steps="token")
    streamed = collect(client, True, messages=ASK, max_tokens=steps)

    assert full["finish_reason"] == streamed["finish_reason"] == "length"
    assert streamed["content"] == full["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
def test_no_tools_in_the_request_shows_no_dsml(server: HarnessServer,
                                               client: openai.OpenAI,
                                               stream: bool) -> None:
    server.push_script("Let me check." + WEATHER_CALL)

    got = collect(client, stream, messages=ASK)

    assert got["tool_calls"] == []
    assert got["content"] is not None and got["content"].strip() == "Let me check."
    assert got["finish_reason"] == "stop"


def test_a_400_message_does_not_end_in_none(client: openai.OpenAI) -> None:
    image = {"type": "image_url",
             "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                         image]}])

    message = info.value.body["message"] if isinstance(info.value.body, dict) else ""
    assert "image_url" in message
    assert not message.rstrip(".").endswith("None"), message


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
def test_thinking_switch_false_as_a_string_is_chat_mode(
        server: HarnessServer, client: openai.OpenAI, stream: bool) -> None:
    server.push_script("323")

    got = collect(client, stream, messages=ASK,
                  extra_body={"chat_template_kwargs": {"thinking": "false"}})

    assert server.requests()[-1]["prompt_text"].endswith("</think>")
    assert (got["reasoning"], got["content"]) == (None, "323")


# The harness itself.


def test_a_refused_request_leaves_no_script_behind(server: HarnessServer,
                                                   client: openai.OpenAI) -> None:
    server.push_script("The refused request's answer.")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_NAME, messages=ASK,
                                       presence_penalty=0.5)
    server.push_script("The next request's answer.")

    got = collect(client, False, messages=ASK)

    assert got["content"] == "The next request's answer."


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
def test_logprobs_of_the_replayed_tokens(server: HarnessServer,
                                         client: openai.OpenAI, stream: bool) -> None:
    server.push_script("Oslo is sunny.")
    request = {"model": MODEL_NAME, "messages": ASK, "logprobs": True,
               "top_logprobs": 2}

    if stream:
        entries = [entry for chunk in client.chat.completions.create(
                       stream=True, **request)
                   for choice in chunk.choices if choice.logprobs
                   for entry in choice.logprobs.content or []]
    else:
        choice = client.chat.completions.create(**request).choices[0]
        entries = choice.logprobs.content

    assert "".join(entry.token for entry in entries).startswith("Oslo is sunny.")
    assert all(entry.logprob == 0.0 for entry in entries)
    assert all(len(entry.top_logprobs) == 2 for entry in entries)
    assert all(top.logprob == -9999.0 for entry in entries
               for top in entry.top_logprobs[1:])


def test_prefix_continuation_streamed_without_tools_is_content(
        server: HarnessServer, client: openai.OpenAI) -> None:
    # A request without tools takes the tool parser's path, which checks the
    # prompt: it already closed the reasoning.
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "The", "prefix": True}]
    server.push_script(" answer is 4.", steps="token")

    got = collect(client, True, messages=messages, **THINKING)

    assert server.requests()[-1]["prompt_text"].endswith("<think></think>The")
    assert (got["reasoning"], got["content"]) == (None, " answer is 4.")
