"""Properties of the deepseek_v4 parsers over every cut and generated DSML.

- Every case and golden completion, cut at every split point, and in random
  steps of 1 to 4 real tokens, streams to exactly the non-streamed result.
- Generated DSML documents, well formed, parse to the calls they encode.
- Mangled ones (cut, spliced, with stray tags) never raise, never stream
  differently from the non-streamed result, and never put DSML into content
  or arguments.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import parser_driver as drv
from tests.test_parser_cases import (
    CASES,
    GOLDEN,
    golden_request,
    model_output,
)

SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {"p": {"type": "string"}, "n": {"type": "number"}},
            },
        },
    }
]
_THINK = {"chat_template_kwargs": {"thinking": True}}
_CALL = (
    '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n'
    '<｜DSML｜parameter name="p" string="true">x</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="n" string="false">{n}</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)
_MENTION = 'Plan: <｜DSML｜parameter name="x" string="true">v</｜DSML｜parameter> more'

# Outputs that end without EOS ("stop_string" or "length": the stream ends
# through finish_streaming), DSML mentioned inside reasoning, and values that
# are not strict JSON.
_EXTRA = [
    ("end-lt", {}, "if a <", "stop_string"),
    ("end-fullwidth", {}, "Answer: x\n\n<｜", "length"),
    ("end-cut-tag", {}, "Answer <｜DS", "length"),
    ("end-think-tag", {}, "x </thi", "stop_string"),
    ("end-blanks", {}, "Answer  \n\n", "length"),
    ("end-reasoning-lt", _THINK, "still thinking <", "length"),
    ("end-content-lt", _THINK, "R</think>if a <", "stop_string"),
    ("end-tools-lt", {"tools": _TOOLS}, "if a <", "stop_string"),
    ("end-tools-fullwidth", {"tools": _TOOLS}, "Answer: x\n\n<｜", "length"),
    ("end-tools-cut", {"tools": _TOOLS}, "Sure." + _CALL.format(n=1)[:-40], "length"),
    ("end-tools-think", {"tools": _TOOLS, **_THINK}, "R</think>if a <", "length"),
    ("dsml-in-reasoning", _THINK, _MENTION + "</think>Answer is 4.", "stop"),
    ("dsml-in-reasoning-tools", {"tools": _TOOLS, **_THINK},
     _MENTION + "</think>Answer is 4.", "stop"),
    ("marker-in-reasoning", {"tools": _TOOLS, **_THINK},
     "I could use <｜DSML｜invoke but no.</think>Answer is 4.", "stop"),
    ("infinite-number", {"tools": _TOOLS}, _CALL.format(n="1e400"), "stop"),
    ("deep-nesting", {"tools": _TOOLS}, _CALL.format(n="[" * 600 + "]" * 600), "stop"),
]

# (id, request fields, output, engine finish reason)
CORPUS = (
    [
        (
            c["id"],
            c["request"],
            model_output(c),
            c.get("generation_finish_reason", "stop"),
        )
        for c in CASES
    ]
    + [(g["id"], golden_request(g), g["output"], "stop") for g in GOLDEN]
    + _EXTRA
)

# A cut every this many characters for the longest outputs keeps CI fast.
MAX_CUTS_PER_OUTPUT = 400


class _Quiet:
    """Keeps the tokenizer out of hypothesis' failure reports."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return "<tokenizer>"


@pytest.fixture(scope="module")
def tok(patched_vllm, model_path):
    return _Quiet(drv.load_tokenizer(model_path))


@pytest.fixture
def no_parser_errors(monkeypatch):
    """Fail on any exception the parsers catch and log instead of raising."""
    from vllm.tool_parsers import deepseekv4_tool_parser

    caught: list[str] = []
    monkeypatch.setattr(
        deepseekv4_tool_parser.logger,
        "exception",
        lambda message, *args, **kwargs: caught.append(message % args),
    )
    yield caught
    assert caught == []


def assert_same(streamed: drv.Parsed, whole: drv.Parsed) -> None:
    assert streamed.normalized() == whole.normalized()
    assert [c["arguments"] for c in streamed.calls] == [
        c["arguments"] for c in whole.calls
    ]


def assert_no_markup(parsed: drv.Parsed) -> None:
    assert not drv.leaks(parsed.content), parsed.content
    assert not drv.leaks(parsed.reasoning), parsed.reasoning
    # A fragment may end in "<｜DS" when the text after it showed that it is
    # no tag; held-back text that became a tag would show up as a leak in the
    # joined arguments, or as a difference from the non-streamed result.
    for fragments in parsed.arguments_fragments.values():
        assert not drv.leaks("".join(fragments))


@pytest.mark.parametrize("item", CORPUS, ids=[item[0] for item in CORPUS])
def test_every_split_point(tok, no_parser_errors, item):
    tokenizer = tok.tokenizer
    _, fields, text, finish = item
    request = drv.make_request(fields)
    whole = drv.complete(tokenizer, request, text)
    eos = finish == "stop"

    skip = drv.special_token_interiors(text)
    cuts = [i for i in range(1, len(text)) if i not in skip]
    if len(cuts) > MAX_CUTS_PER_OUTPUT:
        cuts = random.Random(0).sample(cuts, MAX_CUTS_PER_OUTPUT)
    for cut in cuts:
        steps = drv.text_steps(tokenizer, [text[:cut], text[cut:]], eos)
        streamed = drv.stream(tokenizer, request, steps, finish_reason=finish)
        try:
            assert_same(streamed, whole)
            assert_no_markup(streamed)
        except AssertionError as exc:
            raise AssertionError(f"cut at {cut} ({text[:cut][-20:]!r}): {exc}") from exc


@settings(SETTINGS, max_examples=300)
@given(item=st.sampled_from(CORPUS), seed=st.integers(0, 2**32 - 1))
def test_random_token_steps(tok, no_parser_errors, item, seed):
    tokenizer = tok.tokenizer
    _, fields, text, finish = item
    request = drv.make_request(fields)
    text = text.removesuffix(drv.EOS)
    steps = drv.token_steps(tokenizer, text, random.Random(seed), finish == "stop")
    streamed = drv.stream(tokenizer, request, steps, finish_reason=finish)
    assert_same(streamed, drv.complete(tokenizer, request, text))
    assert_no_markup(streamed)


# ---- generated DSML documents ------------------------------------------------

_PIECES = [
    "a",
    "Zürich",
    "中文",
    " ",
    "\n",
    "\t",
    "<",
    ">",
    "</",
    "/",
    '"',
    "'",
    "\\",
    "&",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "0",
    "42",
    "｜",
    "DSML",
    "think>",
    "parameter",
    "invoke",
    "tool_calls",
    "<b>",
    "x</y>",
]
_FORBIDDEN_IN_TEXT = ("｜DSML｜", drv.EOS, "<｜begin▁of▁sentence｜>")

text_values = (
    st.lists(st.sampled_from(_PIECES), max_size=12)
    .map("".join)
    .filter(lambda s: not any(mark in s for mark in _FORBIDDEN_IN_TEXT))
)
# Prose keeps clear of "｜": a "｜…" fragment right before a block is dropped
# as markup debris (docs/parsers.md); values keep it.
prose = text_values.filter(
    lambda s: "<think>" not in s and "</think>" not in s and "｜" not in s
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text_values,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3),
    max_leaves=6,
)
names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
parameters = st.dictionaries(
    names.filter(lambda n: n not in ("arguments", "input")),
    st.one_of(
        text_values.map(lambda v: (v, True)), json_values.map(lambda v: (v, False))
    ),
    max_size=4,
)
invokes = st.lists(st.tuples(names, parameters), min_size=1, max_size=3)


@st.composite
def documents(draw):
    """A well-formed completion and what it encodes."""
    thinking = draw(st.booleans())
    reasoning = draw(prose) if thinking else ""
    content = draw(prose)
    calls = draw(invokes)

    lines = []
    for name, params in calls:
        lines.append(f'<｜DSML｜invoke name="{name}">')
        for key, (value, is_string) in params.items():
            text = value if is_string else json.dumps(value, ensure_ascii=False)
            flag = "true" if is_string else "false"
            lines.append(
                f'<｜DSML｜parameter name="{key}" string="{flag}">{text}'
                "</｜DSML｜parameter>"
            )
        if not params:
            lines.append("")
        lines.append("</｜DSML｜invoke>")
    block = "\n\n<｜DSML｜tool_calls>\n" + "\n".join(lines) + "\n</｜DSML｜tool_calls>"

    output = (reasoning + "</think>" if thinking else "") + content + block
    expected = [
        {"name": name, "arguments": {k: v for k, (v, _) in params.items()}}
        for name, params in calls
    ]
    return thinking, output, reasoning, content, expected


_JUNK = [
    "<｜DSML｜",
    "</｜DSML｜",
    "</｜DSML｜parameter>",
    "</｜DSML｜invoke>",
    '<｜DSML｜invoke name="x">',
    '<｜DSML｜parameter name="p" string="true">',
    "<｜DSML｜tool_calls>",
    "</｜DSML｜tool_calls>",
    "｜DSML｜",
    drv.EOS,
    "<think>",
    "</think>",
    ">",
    '"',
    "\n",
    "<",
]


@st.composite
def mangled(draw):
    thinking, output, *_ = draw(documents())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(output)))
        operation = draw(st.sampled_from(["cut", "delete", "insert", "repeat"]))
        if operation == "cut":
            output = output[:at]
        elif operation == "delete":
            output = output[:at] + output[at + draw(st.integers(1, 30)) :]
        elif operation == "insert":
            output = output[:at] + draw(st.sampled_from(_JUNK)) + output[at:]
        else:
            output = output[:at] + output[max(0, at - 40) : at] + output[at:]
    return thinking, output


def tools_request(thinking: bool):
    return drv.make_request(
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "auto",
            "chat_template_kwargs": {"thinking": thinking},
        }
    )


def random_steps(tokenizer, text: str, seed: int):
    if seed % 2:
        return drv.token_steps(tokenizer, text, random.Random(seed), True)
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(text):
        size = rng.randint(1, 12)
        chunks.append(text[pos : pos + size])
        pos += size
    return drv.text_steps(tokenizer, chunks, True)


@settings(SETTINGS, max_examples=1000)
@given(document=documents(), seed=st.integers(0, 2**16))
def test_well_formed_documents_parse_to_their_calls(
    tok, no_parser_errors, document, seed
):
    tokenizer = tok.tokenizer
    thinking, output, reasoning, content, expected = document
    request = tools_request(thinking)
    whole = drv.complete(tokenizer, request, output)
    assert [
        {"name": c["name"], "arguments": json.loads(c["arguments"])}
        for c in whole.calls
    ] == expected
    assert whole.reasoning == reasoning
    assert whole.content.strip() == content.rstrip().strip()

    streamed = drv.stream(tokenizer, request, random_steps(tokenizer, output, seed))
    assert_same(streamed, whole)
    assert_no_markup(streamed)


@settings(SETTINGS, max_examples=2000)
@given(document=mangled(), seed=st.integers(0, 2**16))
def test_mangled_documents_never_leak_or_raise(tok, no_parser_errors, document, seed):
    tokenizer = tok.tokenizer
    thinking, output = document
    if drv.EOS in output:
        # Generation stops at EOS; nothing can follow it.
        output = output[: output.index(drv.EOS) + len(drv.EOS)]
    request = tools_request(thinking)
    whole = drv.complete(tokenizer, request, output)
    assert_no_markup(whole)
    for call in whole.calls:
        assert isinstance(json.loads(call["arguments"]), dict)

    streamed = drv.stream(tokenizer, request, random_steps(tokenizer, output, seed))
    assert_same(streamed, whole)
    assert_no_markup(streamed)
