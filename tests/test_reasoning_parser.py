"""The deepseek_v4 reasoning parser, one behaviour at a time."""

from __future__ import annotations

import pytest

from tests.support import parser_driver as drv

DSML_BLOCK = (
    '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="read">\n'
    '<｜DSML｜parameter name="path" string="true">a.txt</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)


@pytest.fixture(scope="module")
def tokenizer(patched_vllm, model_path):
    return drv.load_tokenizer(model_path)


@pytest.fixture(scope="module")
def parser_cls(patched_vllm):
    return drv.parser_classes()[0]


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def feed(parser, tokenizer, chunks: list[str]) -> tuple[str, str]:
    reasoning, content, previous = [], [], ""
    for chunk in chunks:
        delta = parser.extract_reasoning_streaming(
            previous, previous + chunk, chunk, [], [], ids(tokenizer, chunk)
        )
        previous += chunk
        if delta is not None:
            reasoning.append(delta.reasoning or "")
            content.append(delta.content or "")
    return "".join(reasoning), "".join(content)


def test_registered_under_deepseek_v4(parser_cls):
    assert parser_cls.__name__ == "DeepSeekV4ReasoningParser"
    assert parser_cls.__module__ == "vllm.reasoning.deepseek_v4_reasoning_parser"


@pytest.mark.parametrize(
    ("kwargs", "thinking"),
    [
        (None, False),
        ({}, False),
        ({"thinking": True}, True),
        ({"enable_thinking": True}, True),
        ({"thinking": False}, False),
        ({"thinking": True, "reasoning_effort": "none"}, False),
        ({"thinking": True, "reasoning_effort": "max"}, True),
    ],
)
def test_thinking_default_matches_the_tokenizer(
    tokenizer, parser_cls, kwargs, thinking
):
    from vllm.tokenizers.deepseek_v4_encoding import thinking_requested

    assert thinking_requested(kwargs) is thinking
    parser = parser_cls(tokenizer, chat_template_kwargs=kwargs)
    reasoning, content = parser.extract_reasoning("abc</think>def", request=None)
    if thinking:
        assert (reasoning, content) == ("abc", "def")
    else:
        assert (reasoning, content) == (None, "abcdef")


def test_reasoning_end_without_kwargs_reads_the_prompt(tokenizer, parser_cls):
    # The structured-output manager builds the parser with the tokenizer only.
    parser = parser_cls(tokenizer=tokenizer)
    history = "<｜User｜>a<｜Assistant｜><think>r</think>x<｜end▁of▁sentence｜>"
    thinking_prompt = ids(tokenizer, history + "<｜User｜>b<｜Assistant｜><think>")
    chat_prompt = ids(tokenizer, history + "<｜User｜>b<｜Assistant｜></think>")
    assert parser.is_reasoning_end(thinking_prompt) is False
    assert parser.is_reasoning_end(chat_prompt) is True
    assert parser.is_reasoning_end([]) is False


def test_reasoning_end_streaming_looks_at_the_new_ids_only(tokenizer, parser_cls):
    parser = parser_cls(tokenizer=tokenizer)
    output = ids(tokenizer, "r</think>" + "word " * 50)
    assert parser.is_reasoning_end_streaming(output, output[-3:]) is False
    assert parser.is_reasoning_end_streaming(output, ids(tokenizer, "x</think>"))


def test_multi_token_delta_keeps_reasoning_tail_and_content(tokenizer, parser_cls):
    parser = parser_cls(tokenizer, chat_template_kwargs={"thinking": True})
    first = "Need to look"
    delta_text = " at it.</think>Answer"
    parser.extract_reasoning_streaming("", first, first, [], [], ids(tokenizer, first))
    delta_ids = ids(tokenizer, delta_text)
    delta = parser.extract_reasoning_streaming(
        first, first + delta_text, delta_text, [], [], delta_ids
    )
    assert (delta.reasoning, delta.content) == (" at it.", "Answer")
    assert parser.is_reasoning_end(delta_ids)
    assert tokenizer.decode(parser.extract_content_ids(delta_ids)) == "Answer"


def test_dsml_block_ends_reasoning_in_a_stream(tokenizer, parser_cls):
    parser = parser_cls(tokenizer, chat_template_kwargs={"thinking": True})
    reasoning, content = feed(parser, tokenizer, ["I need a file.", DSML_BLOCK[:30]])
    assert reasoning == "I need a file."
    assert content == DSML_BLOCK[2:30]
    # No think marker in the delta's ids: the parser's own state answers.
    assert parser.is_reasoning_end(ids(tokenizer, DSML_BLOCK[2:30]))

    # A new stream on the same instance starts in reasoning again.
    feed(parser, tokenizer, ["fresh"])
    assert not parser.is_reasoning_end(ids(tokenizer, "more"))


@pytest.mark.parametrize(
    "output",
    [
        "abc<｜end▁of▁sentence｜>",
        "<｜begin▁of▁sentence｜>abc",
        "ab<think>c",
        "abc\n\n",
    ],
)
def test_markers_never_reach_unclosed_reasoning(tokenizer, parser_cls, output):
    parser = parser_cls(tokenizer, chat_template_kwargs={"thinking": True})
    assert parser.extract_reasoning(output, request=None) == ("abc", None)
    assert feed(parser, tokenizer, list(output) + [""]) == ("abc", "")


def test_chat_mode_absorbs_think_markers_and_eos(tokenizer, parser_cls):
    parser = parser_cls(tokenizer, chat_template_kwargs={"thinking": False})
    output = "</think>Hello <think>there.<｜end▁of▁sentence｜>"
    assert parser.extract_reasoning(output, request=None) == (None, "Hello there.")
    assert feed(parser, tokenizer, list(output)) == ("", "Hello there.")


def test_partial_marker_is_released_when_it_does_not_complete(tokenizer, parser_cls):
    parser = parser_cls(tokenizer, chat_template_kwargs={"thinking": True})
    chunks = ["a </thi", "s is not a tag"]
    assert feed(parser, tokenizer, chunks + [""]) == ("a </this is not a tag", "")


def test_blank_run_before_dsml_is_dropped_up_to_a_bound(tokenizer, parser_cls):
    # The hold-back stays bounded: a long run of blanks is released as it
    # comes, and only the last 64 characters can still be dropped.
    parser = parser_cls(tokenizer, chat_template_kwargs={"thinking": True})
    output = "plan" + " " * 200 + DSML_BLOCK.lstrip()
    reasoning, _ = parser.extract_reasoning(output, request=None)
    assert reasoning == "plan" + " " * 136
    streamed, _ = feed(parser, tokenizer, [output[i : i + 3] for i in range(0, 250, 3)])
    assert streamed == reasoning


def test_value_after_dsml_keeps_think_text(tokenizer, parser_cls):
    # Once a DSML block starts, the text belongs to the tool parser as is.
    parser = parser_cls(tokenizer, chat_template_kwargs={"thinking": True})
    block = DSML_BLOCK.replace("a.txt", "<think>notes</think>")
    reasoning, content = parser.extract_reasoning("r</think>" + block, request=None)
    assert reasoning == "r"
    assert content == block


def thinking_request(messages=None, **fields):
    body = {"chat_template_kwargs": {"thinking": True}, **fields}
    if messages is not None:
        body["messages"] = messages
    return drv.make_request(body)


def split_both_ways(tokenizer, parser_cls, output: str, request) -> tuple:
    """The non-streamed split, checked equal to a stream cut at every point."""
    kwargs = request.chat_template_kwargs
    whole = parser_cls(tokenizer, chat_template_kwargs=kwargs).extract_reasoning(
        output, request=request
    )
    whole = (whole[0] or "", whole[1] or "")
    for cut in range(1, len(output)):
        parser = parser_cls(tokenizer, chat_template_kwargs=kwargs)
        reasoning, content = feed(parser, tokenizer, [output[:cut], output[cut:]])
        end = parser.finish_streaming()
        if end is not None:
            reasoning += end.reasoning or ""
            content += end.content or ""
        assert (reasoning, content) == whole, f"cut at {cut}"
    return whole


@pytest.mark.parametrize(
    "output, expected",
    [
        # Markup that does not start a block is dropped; the reasoning goes on.
        (
            'Plan: <｜DSML｜parameter name="x" string="true">v</｜DSML｜parameter>'
            " more</think>Answer is 4.",
            ("Plan: v more", "Answer is 4."),
        ),
        # A marker with no tag after it ("<" before ">") is not a tag.
        (
            "I could use <｜DSML｜invoke but no.</think>Answer is 4.",
            ("I could use invoke but no.", "Answer is 4."),
        ),
        ("a </｜DSML｜invoke> b</think>c", ("a  b", "c")),
        ('a <｜DSML｜invoke>b</think>c', ("a b", "c")),
        # A block start ends the reasoning: the wrapper, its aliases, and an
        # invoke with a name (recovered by the tool parser without a wrapper).
        ("R" + DSML_BLOCK, ("R", DSML_BLOCK.lstrip())),
        (
            'R <｜DSML｜function_calls>\n<｜DSML｜invoke name="f">',
            ("R", '<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">'),
        ),
        (
            'R\n<｜DSML｜invoke name="f">\n</｜DSML｜invoke>',
            ("R", '<｜DSML｜invoke name="f">\n</｜DSML｜invoke>'),
        ),
        # A tag cut off by the end of the output is markup: dropped.
        ("R <｜DSML｜inv", ("R", "")),
        ('R <｜DSML｜invoke name="f"', ("R", "")),
    ],
)
def test_only_a_block_start_ends_the_reasoning(
    tokenizer, parser_cls, output, expected
):
    got = split_both_ways(tokenizer, parser_cls, output, thinking_request())
    assert got == expected


def test_a_tag_longer_than_the_bound_is_not_a_tag(tokenizer, parser_cls):
    output = "R <｜DSML｜invoke " + "x" * 1100 + '">tail</think>Answer'
    parser = parser_cls(tokenizer, chat_template_kwargs={"thinking": True})
    reasoning, content = parser.extract_reasoning(output, request=thinking_request())
    assert content == "Answer" and "｜DSML｜" not in reasoning
    assert reasoning.startswith("R invoke xxx") and reasoning.endswith("tail")


@pytest.mark.parametrize(
    "last",
    [
        {"role": "assistant", "content": "The", "prefix": True},
        {"role": "assistant", "content": "", "reasoning": "R", "prefix": True},
    ],
)
def test_prefix_continuation_is_content(tokenizer, parser_cls, last):
    messages = [{"role": "user", "content": "hi"}, last]
    request = thinking_request(messages)
    parser = parser_cls(tokenizer, chat_template_kwargs=request.chat_template_kwargs)
    assert parser.extract_reasoning(" answer is 4.", request=request) == (
        None,
        " answer is 4.",
    )


def test_continue_final_message_is_content(tokenizer, parser_cls):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "A"}]
    request = thinking_request(
        messages, continue_final_message=True, add_generation_prompt=False
    )
    parser = parser_cls(tokenizer, chat_template_kwargs=request.chat_template_kwargs)
    assert parser.extract_reasoning("nswer</think>", request=request)[0] is None


def test_an_assistant_message_without_prefix_is_a_new_turn(tokenizer, parser_cls):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "again"},
    ]
    request = thinking_request(messages)
    parser = parser_cls(tokenizer, chat_template_kwargs=request.chat_template_kwargs)
    assert parser.extract_reasoning("R</think>C", request=request) == ("R", "C")


@pytest.mark.parametrize(
    "kwargs, output, expected",
    [
        # Text that only looked like the start of a marker is sent at the end.
        (None, "if a <", ("", "if a <")),
        (None, "x </thi", ("", "x </thi")),
        (None, "Answer: x\n\n<｜", ("", "Answer: x\n\n<｜")),
        ({"thinking": True}, "still thinking <", ("still thinking <", "")),
        ({"thinking": True}, "R</think>if a <", ("R", "if a <")),
        # Three characters of a DSML marker at the very end are a cut tag.
        (None, "Answer <｜DS", ("", "Answer ")),
        ({"thinking": True}, "R <｜DS", ("R", "")),
    ],
)
def test_finish_streaming_sends_what_was_held_back(
    tokenizer, parser_cls, kwargs, output, expected
):
    request = drv.make_request({"chat_template_kwargs": kwargs})
    assert split_both_ways(tokenizer, parser_cls, output, request) == expected
