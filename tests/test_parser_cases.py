"""Every parser case and golden completion, streamed and not.

The parsers come from vLLM's own registries in the tree patched by
`dsv4patch apply`; tokens come from the real DeepSeek-V4 tokenizer.
"""

from __future__ import annotations

import json
import random

import pytest

from tests.support import parser_driver as drv
from tests.support.trees import SHARED

CASES = json.loads((SHARED / "cases" / "parser-cases.json").read_text("utf-8"))
GOLDEN = json.loads((SHARED / "golden" / "outputs.json").read_text("utf-8"))["cases"]
CASES_BY_ID = {case["id"]: case for case in CASES}

# Disputed cases where this series follows `alt_expected`; docs/parsers.md
# gives the reasons. For the other disputed cases it follows `expected`.
FOLLOWS_ALTERNATIVE = {"b33-no-think-close-answer"}

# b45b is run right after this case on the same tool parser instance: the case
# it names (b45a) is not in the file, so a streamed tool-call case stands in.
REUSE_STAND_IN = "b46-required-parallel-stream"

# Big enough to show chunk invariance, small enough for CI.
MTP_SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def tokenizer(patched_vllm, model_path):
    return drv.load_tokenizer(model_path)


def model_output(case: dict) -> str:
    output = case["model_output"]
    return "".join(output) if isinstance(output, list) else output


def expected(case: dict) -> dict:
    follows_alternative = case["id"] in FOLLOWS_ALTERNATIVE
    result = case["alt_expected"] if follows_alternative else case["expected"]
    return {
        "reasoning": result["reasoning"] or "",
        "content": result["content"] if (result["content"] or "").strip() else "",
        "calls": [
            {"name": c["name"], "arguments": c["arguments"]}
            for c in result["tool_calls"]
        ],
        "finish_reason": result["finish_reason"],
    }


def stream_variants(tokenizer, case: dict) -> dict[str, list]:
    """Every way the case asks to be cut, plus token-by-token and MTP steps."""
    text = model_output(case)
    eos = case.get("generation_finish_reason", "stop") == "stop"
    variants = {}
    if isinstance(case["model_output"], list):
        variants["given"] = drv.text_steps(tokenizer, case["model_output"], eos)
    for size in case.get("stream_chunk_chars", []):
        variants[f"chars{size}"] = drv.text_steps(
            tokenizer, drv.chunked(text, size), eos
        )
    variants["tokens"] = drv.token_steps(tokenizer, text, None, eos)
    for seed in MTP_SEEDS:
        rng = random.Random(seed)
        variants[f"mtp{seed}"] = drv.token_steps(tokenizer, text, rng, eos)
    return variants


def assert_clean(parsed: drv.Parsed) -> None:
    assert not drv.leaks(parsed.content), parsed.content
    assert not any(mark in parsed.content for mark in drv.THINK_MARKS)
    assert not drv.leaks(parsed.reasoning), parsed.reasoning
    for fragments in parsed.arguments_fragments.values():
        for fragment in fragments:
            assert not drv.leaks(fragment), fragment


def check_case(case: dict, parsed: drv.Parsed, request) -> None:
    want = expected(case)
    got = parsed.normalized()
    assert got["reasoning"] == want["reasoning"]
    assert got["content"] == want["content"]
    assert got["calls"] == want["calls"]
    assert len({c["id"] for c in parsed.calls}) == len(parsed.calls)

    engine_reason = case.get("generation_finish_reason", "stop")
    if parsed.incomplete_calls:
        # A call cut off by max_tokens was already opened on the wire; only
        # a length stop may leave one behind.
        assert engine_reason == "length"
    reason = drv.serving_finish_reason(request, engine_reason, parsed.calls)
    assert reason == want["finish_reason"]
    assert_clean(parsed)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_not_streamed(tokenizer, case):
    request = drv.make_request(case["request"])
    check_case(case, drv.complete(tokenizer, request, model_output(case)), request)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_streamed(tokenizer, case):
    request = drv.make_request(case["request"])
    tool_parser = None
    if "reuse_parser_from" in case:
        stand_in = CASES_BY_ID[REUSE_STAND_IN]
        previous = drv.make_request(stand_in["request"])
        _, tool_cls = drv.parser_classes()
        tool_parser = tool_cls(tokenizer)
        steps = drv.text_steps(tokenizer, [model_output(stand_in)], True)
        first = drv.stream(tokenizer, previous, steps, tool_parser=tool_parser)
        assert len(first.calls) == 2

    engine_reason = case.get("generation_finish_reason", "stop")
    for name, steps in stream_variants(tokenizer, case).items():
        parsed = drv.stream(
            tokenizer,
            request,
            steps,
            tool_parser=tool_parser,
            finish_reason=engine_reason,
        )
        try:
            check_case(case, parsed, request)
        except AssertionError as exc:
            raise AssertionError(f"cut {name!r}: {exc}") from exc


def golden_request(case: dict) -> dict:
    names = ("get_weather", "get_time", "search_docs", "write_file", "translate")
    tools = [
        {"type": "function", "function": {"name": name, "parameters": None}}
        for name in (*names, "ping")
    ]
    thinking = case["thinking_mode"] == "thinking"
    return {
        "tools": tools,
        "tool_choice": "auto",
        "chat_template_kwargs": {"thinking": thinking},
    }


def check_golden(case: dict, parsed: drv.Parsed) -> None:
    want = case["expected"]
    assert parsed.reasoning == want["reasoning_content"]
    assert parsed.content.strip() == want["content"]
    assert [(c["name"], c["arguments"]) for c in parsed.calls] == [
        (c["name"], c["arguments"]) for c in want["tool_calls"]
    ]
    assert_clean(parsed)


@pytest.mark.parametrize("case", GOLDEN, ids=[c["id"] for c in GOLDEN])
def test_golden_not_streamed(tokenizer, case):
    request = drv.make_request(golden_request(case))
    check_golden(case, drv.complete(tokenizer, request, case["output"]))


@pytest.mark.parametrize("case", GOLDEN, ids=[c["id"] for c in GOLDEN])
def test_golden_streamed(tokenizer, case):
    request = drv.make_request(golden_request(case))
    text = case["output"]
    # The engine never detokenizes the EOS it stops on; it ends the last step.
    stripped = text.removesuffix(drv.EOS)
    variants = {
        "chars1": drv.text_steps(tokenizer, drv.chunked(text, 1), False),
        "chars7": drv.text_steps(tokenizer, drv.chunked(text, 7), False),
        "tokens": drv.token_steps(tokenizer, stripped, None, True),
    }
    for seed in MTP_SEEDS:
        variants[f"mtp{seed}"] = drv.token_steps(
            tokenizer, stripped, random.Random(seed), True
        )
    for name, steps in variants.items():
        try:
            check_golden(case, drv.stream(tokenizer, request, steps))
        except AssertionError as exc:
            raise AssertionError(f"cut {name!r}: {exc}") from exc


@pytest.mark.parametrize(
    "case",
    [c for c in GOLDEN if not c["expected"]["tool_calls"]],
    ids=lambda c: c["id"],
)
def test_golden_without_tools(tokenizer, case):
    """No tools in the request: the reasoning parser alone serves the stream."""
    fields = golden_request(case)
    fields.pop("tools")
    request = drv.make_request(fields)
    check_golden(case, drv.complete(tokenizer, request, case["output"]))
    for size in (1, 5):
        steps = drv.text_steps(tokenizer, drv.chunked(case["output"], size), False)
        check_golden(case, drv.stream(tokenizer, request, steps))
