"""The deepseek_v4 DSML tool-call parser, one behaviour at a time."""

from __future__ import annotations

import json

import pytest

from tests.support import parser_driver as drv


def block(*invokes: str) -> str:
    return "\n\n<｜DSML｜tool_calls>\n" + "\n".join(invokes) + "\n</｜DSML｜tool_calls>"


def invoke(name: str, *params: tuple[str, str, bool]) -> str:
    lines = [f'<｜DSML｜invoke name="{name}">']
    for key, value, is_string in params:
        flag = "true" if is_string else "false"
        lines.append(
            f'<｜DSML｜parameter name="{key}" string="{flag}">{value}</｜DSML｜parameter>'
        )
    if not params:
        lines.append("")
    lines.append("</｜DSML｜invoke>")
    return "\n".join(lines)


def tool(name: str, properties: dict | None = None) -> dict:
    parameters = (
        None
        if properties is None
        else {
            "type": "object",
            "properties": properties,
        }
    )
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def request_for(*tools: dict, tool_choice="auto"):
    return drv.make_request(
        {
            "tools": list(tools),
            "tool_choice": tool_choice,
            "chat_template_kwargs": {"thinking": False},
        }
    )


@pytest.fixture(scope="module")
def tokenizer(patched_vllm, model_path):
    return drv.load_tokenizer(model_path)


@pytest.fixture(scope="module")
def parser_cls(patched_vllm):
    return drv.parser_classes()[1]


def both_ways(tokenizer, request, output: str, chunk: int = 3) -> drv.Parsed:
    """Parse `output` whole and streamed; they must agree. Returns the latter."""
    whole = drv.complete(tokenizer, request, output)
    steps = drv.text_steps(tokenizer, drv.chunked(output, chunk), True)
    streamed = drv.stream(tokenizer, request, steps)
    assert streamed.normalized() == whole.normalized()
    assert [c["arguments"] for c in streamed.calls] == [
        c["arguments"] for c in whole.calls
    ]
    return streamed


def arguments_of(parsed: drv.Parsed) -> list[dict]:
    return [json.loads(call["arguments"]) for call in parsed.calls]


def test_registered_under_deepseek_v4(parser_cls):
    assert parser_cls.__name__ == "DeepSeekV4ToolParser"
    assert parser_cls.supports_required_and_named is False
    assert parser_cls.tool_call_start_token == "<｜DSML｜tool_calls>"


@pytest.mark.parametrize("tool_choice", ["auto", "required", "named"])
def test_adjust_request_keeps_markers_and_sets_no_grammar(
    tokenizer, parser_cls, tool_choice
):
    if tool_choice == "named":
        tool_choice = {"type": "function", "function": {"name": "read"}}
    request = request_for(tool("read"), tool_choice=tool_choice)
    adjusted = parser_cls(tokenizer).adjust_request(request)
    assert adjusted.skip_special_tokens is False
    assert adjusted.structured_outputs is None


def test_adjust_request_leaves_tool_choice_none_alone(tokenizer, parser_cls):
    request = request_for(tool("read"), tool_choice="none")
    assert parser_cls(tokenizer).adjust_request(request).skip_special_tokens is True


@pytest.mark.parametrize(
    ("schema", "text", "value"),
    [
        ({"type": "integer"}, "42", 42),
        ({"type": "integer"}, " 7 ", 7),
        ({"type": "integer"}, "3.0", 3),
        ({"type": "number"}, "0.5", 0.5),
        ({"type": "number"}, "1e3", 1000.0),
        ({"type": "boolean"}, "True", True),
        ({"type": "boolean"}, "false", False),
        ({"type": "null"}, "None", None),
        ({"type": ["integer", "string"]}, "abc", "abc"),
        ({"type": ["null", "integer"]}, "null", None),
        ({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, "TRUE", True),
        ({"type": "array"}, "['a', 'b']", ["a", "b"]),
        ({"type": "object"}, "{'k': 1}", {"k": 1}),
        ({"type": "object"}, "not json", "not json"),
        ({"type": "string"}, "42", "42"),
        ({"type": "string"}, '"quoted"', "quoted"),
        ({"type": "number"}, "NaN", "NaN"),
        (None, "NaN", "NaN"),
        (None, "[1, 2]", [1, 2]),
        (None, "plain words", "plain words"),
        # Overflow to infinity is not JSON: the text follows the other
        # schema types or stays the raw string.
        ({"type": "integer"}, "1e400", "1e400"),
        ({"type": "number"}, "-1e400", "-1e400"),
        ({"type": ["number", "string"]}, "1e400", "1e400"),
        ({"type": "array"}, "[1e999, -1e999]", "[1e999, -1e999]"),
        ({"type": "object"}, '{"a": 1e400}', '{"a": 1e400}'),
        ({"type": "number"}, "-Infinity", "-Infinity"),
        (None, "1e400", "1e400"),
        (None, "[1e999,-1e999]", "[1e999,-1e999]"),
        (None, "[1.5, 1e308]", [1.5, 1e308]),
    ],
)
def test_string_false_values_follow_the_schema(tokenizer, schema, text, value):
    properties = {} if schema is None else {"v": schema}
    request = request_for(tool("f", properties))
    output = block(invoke("f", ("v", text, False)))
    parsed = both_ways(tokenizer, request, output)
    assert arguments_of(parsed) == [{"v": value}]
    # Whatever the text, the arguments are valid, strict JSON.
    json.loads(parsed.calls[0]["arguments"], parse_constant=pytest.fail)


def test_string_true_values_stay_literal(tokenizer):
    request = request_for(tool("f", {"n": {"type": "integer"}}))
    code = 'print("a < b & c")\n\treturn "C:\\\\tmp" </think> <｜x'
    parsed = both_ways(tokenizer, request, block(invoke("f", ("n", code, True))), 1)
    assert arguments_of(parsed) == [{"n": code}]


def test_lone_arguments_parameter_is_unwrapped(tokenizer):
    inner = '{"city": "Oslo", "days": 3}'
    output = block(invoke("weather", ("arguments", inner, False)))
    properties = {"city": {"type": "string"}, "days": {"type": "integer"}}
    parsed = both_ways(tokenizer, request_for(tool("weather", properties)), output)
    assert arguments_of(parsed) == [{"city": "Oslo", "days": 3}]

    # A real parameter called `arguments` is left alone.
    properties = {"arguments": {"type": "object"}}
    parsed = both_ways(tokenizer, request_for(tool("weather", properties)), output)
    assert arguments_of(parsed) == [{"arguments": {"city": "Oslo", "days": 3}}]


def test_wrapper_followed_by_more_parameters_is_not_unwrapped(tokenizer):
    output = block(invoke("f", ("input", '{"a": 1}', False), ("b", "x", True)))
    parsed = both_ways(tokenizer, request_for(tool("f")), output)
    assert arguments_of(parsed) == [{"input": {"a": 1}, "b": "x"}]


def test_repeated_parameter_keeps_the_first_value(tokenizer):
    output = block(invoke("f", ("a", "one", True), ("a", "two", True)))
    parsed = both_ways(tokenizer, request_for(tool("f")), output)
    assert arguments_of(parsed) == [{"a": "one"}]


def test_calls_get_unique_ids_and_empty_arguments(tokenizer):
    output = block(invoke("ping"), invoke("ping"), invoke("ping"))
    request = request_for(tool("ping", {}))
    whole = drv.complete(tokenizer, request, output)
    streamed = both_ways(tokenizer, request, output)
    for parsed in (whole, streamed):
        assert [c["arguments"] for c in parsed.calls] == ["{}"] * 3
        ids = [c["id"] for c in parsed.calls]
        assert len(set(ids)) == 3 and all(i.startswith("call_") for i in ids)
        assert all(len(i) > len("call_") + 8 for i in ids)


def test_string_arguments_stream_as_they_arrive(tokenizer):
    value = "".join(f'line {n}: a < b, "q" \\ \t</t\n' for n in range(300))
    output = block(invoke("write", ("path", "a.txt", True), ("content", value, True)))
    steps = drv.token_steps(tokenizer, output, None, True)
    parsed = drv.stream(tokenizer, request_for(tool("write")), steps)

    fragments = parsed.arguments_fragments[0]
    assert len(fragments) > 1000
    assert "".join(fragments) == parsed.calls[0]["arguments"]
    assert arguments_of(parsed) == [{"path": "a.txt", "content": value}]
    for fragment in fragments:
        assert "｜DSML｜" not in fragment and not drv.partial_markup_tail(fragment)


def test_content_streams_before_a_partial_tag_resolves(tokenizer, parser_cls):
    parser = parser_cls(tokenizer)
    request = request_for(tool("read"))
    first = parser.extract_tool_calls_streaming("", "Hi <", "Hi <", [], [], [], request)
    assert first.content == "Hi"
    second = parser.extract_tool_calls_streaming(
        "Hi <", "Hi <b>", "b>", [], [], [], request
    )
    assert second.content == " <b>"


def test_truncated_call_is_recorded_but_never_completed(tokenizer, parser_cls):
    output = block(
        invoke("write", ("path", "a.txt", True), ("content", "x" * 50, True))
    )
    truncated = output[: output.index("x" * 50) + 20]
    request = request_for(tool("write"))
    assert drv.complete(tokenizer, request, truncated).calls == []

    steps = drv.text_steps(tokenizer, drv.chunked(truncated, 4), False)
    parser = parser_cls(tokenizer)
    parsed = drv.stream(tokenizer, request, steps, parser, finish_reason="length")
    assert parsed.calls == [] and len(parsed.incomplete_calls) == 1
    # serving_chat needs the header it streamed recorded, or it cannot finish.
    assert [r["name"] for r in parser.prev_tool_call_arr] == ["write"]
    assert parser.streamed_args_for_tool[0] == parsed.incomplete_calls[0]["arguments"]


def test_reused_instance_starts_each_stream_clean(tokenizer, parser_cls):
    parser = parser_cls(tokenizer)
    request = request_for(tool("read"))
    output = block(invoke("read", ("path", "a", True)))
    steps = drv.text_steps(tokenizer, drv.chunked(output, 5), True)
    first = drv.stream(tokenizer, request, steps, parser)
    second = drv.stream(tokenizer, request, steps, parser)
    assert first.normalized() == second.normalized()
    assert first.calls[0]["id"] != second.calls[0]["id"]
    assert len(parser.prev_tool_call_arr) == 1

    plain = drv.stream(
        tokenizer, request, drv.text_steps(tokenizer, ["Hi"], True), parser
    )
    assert plain.content == "Hi" and parser.prev_tool_call_arr == []


@pytest.mark.parametrize(
    "output",
    [
        "Done.<｜DSML｜tool_calls></｜DSML｜tool_calls> All set.",
        "Done. </｜DSML｜invoke> All set.",
        "Done.<｜DSML｜frobnicate> All set.",
        "Done.<｜DSML｜invoke>\n</｜DSML｜invoke> All set.</｜DSML｜tool_calls>",
        "Done. <｜end▁of▁sentence｜>All set.",
        "Done. </think>All set.",
    ],
)
def test_stray_markup_never_reaches_content(tokenizer, output):
    parsed = both_ways(tokenizer, request_for(tool("read")), output, 2)
    assert parsed.content.startswith("Done.") and parsed.content.endswith("All set.")
    assert not drv.leaks(parsed.content)
    assert parsed.calls == []


def test_unterminated_tag_is_dropped_with_a_bound(tokenizer):
    output = "Hi" + block('<｜DSML｜invoke name="read' + "x" * 3000)
    parsed = both_ways(tokenizer, request_for(tool("read")), output, 64)
    assert parsed.content == "Hi" and parsed.calls == []


@pytest.mark.parametrize("depth", [101, 1200, 5000])
def test_deep_nesting_stays_a_string(tokenizer, depth):
    deep = "[" * depth + "]" * depth
    request = request_for(tool("f", {"v": {"type": "array"}, "p": {"type": "string"}}))
    output = "Before." + block(invoke("f", ("p", "x", True), ("v", deep, False)))
    parsed = both_ways(tokenizer, request, output, chunk=64)
    assert parsed.content == "Before."
    assert arguments_of(parsed) == [{"p": "x", "v": deep}]


def test_nesting_within_the_bound_is_parsed(tokenizer):
    nested = "[" * 100 + "]" * 100
    request = request_for(tool("f", {"v": {"type": "array"}}))
    parsed = both_ways(tokenizer, request, block(invoke("f", ("v", nested, False))))
    assert json.dumps(arguments_of(parsed)[0]["v"]) == nested.replace("][", "], [")


@pytest.fixture
def failing_values(monkeypatch):
    """Makes value conversion fail unexpectedly, as a bug in it would."""
    from vllm.tool_parsers import deepseekv4_dsml

    def broken(text, schema):
        raise RuntimeError("value conversion failed")

    monkeypatch.setattr(deepseekv4_dsml, "convert_value", broken)


@pytest.mark.parametrize(
    "output",
    [
        "Before." + block(invoke("f", ("v", "1", False))),
        "Before.</｜DSML｜invoke>" + block(invoke("f", ("v", "1", False))),
        "Before.｜DSML｜" + block(invoke("f", ("v", "1", False))),
    ],
)
def test_an_unexpected_error_never_puts_markup_in_content(
    tokenizer, failing_values, output
):
    request = request_for(tool("f", {"v": {"type": "integer"}}))
    whole = drv.complete(tokenizer, request, output)
    assert (whole.content, whole.calls) == ("Before.", [])

    steps = drv.text_steps(tokenizer, drv.chunked(output, 4), True)
    streamed = drv.stream(tokenizer, request, steps)
    assert streamed.calls == [] and not drv.leaks(streamed.content)
    assert streamed.content.startswith("Before.")


@pytest.mark.parametrize(
    "output, content",
    [
        ("if a <", "if a <"),
        ("Answer: x\n\n<｜", "Answer: x\n\n<｜"),
        ("Answer <｜DS", "Answer "),
        ("Answer </｜DSML｜tool_c", "Answer "),
        ("Sure." + block(invoke("f", ("p", "x", True)))[:-5], "Sure."),
    ],
)
def test_finish_streaming_sends_held_content_and_no_half_call(
    tokenizer, parser_cls, output, content
):
    request = request_for(tool("f", {"p": {"type": "string"}}))
    whole = drv.complete(tokenizer, request, output)
    for size in (1, 2, 5):
        steps = drv.text_steps(tokenizer, drv.chunked(output, size), False)
        streamed = drv.stream(tokenizer, request, steps, finish_reason="stop")
        assert streamed.normalized() == whole.normalized()
        assert streamed.content == content
    assert [c["name"] for c in whole.calls] == (["f"] if "invoke>" in output else [])


def test_finish_streaming_leaves_an_open_invoke_unsent(tokenizer, parser_cls):
    output = "Sure." + block(invoke("f", ("p", "a long value", True)))
    cut = output[: output.index("long")]
    request = request_for(tool("f", {"p": {"type": "string"}}))
    parser = parser_cls(tokenizer)
    parser.extract_tool_calls_streaming("", cut, cut, [], [], [], request=request)
    assert parser.finish_streaming() is None
    assert parser.prev_tool_call_arr == [{"name": "f", "arguments": {}}]
