"""How the deepseek_v4 parsers' streaming cost grows with the output.

    python benchmarks/parser_streaming.py [--vllm PATCHED_TREE] [--quick]

Streams outputs one token per delta (the real DeepSeek-V4 tokenizer) through the
parsers that the patched tree's registries return, making the calls serving_chat
makes for each delta, and measures the parsers' CPU time:

1. a `write_file` call whose string argument is 1 KiB to 512 KiB, through the
   tool parser (chat mode, tool_choice "auto");
2. 1k to 200k reasoning tokens through the reasoning parser in thinking mode
   (`is_reasoning_end` on the prompt, `extract_reasoning_streaming`,
   `is_reasoning_end` on the delta, as in serving_chat's tool path);
3. for reference, v0.13.0's `deepseek_v3` reasoning parser (thinking on) on
   the same deltas, at the smaller sizes.

serving_chat's own `previous_text + delta_text` concatenation is not part of the
measurement; the parsers only read the delta. Prints Markdown tables with the
time per delta and the ratio to the previous row: each row doubles the input,
so 2.0 is linear and 4.0 quadratic.

Without --vllm, pristine copies are patched with `dsv4patch apply` in a temporary
directory, as the test suite does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "def return value index query result build error retry queue self None "
    'if else for in range print Zürich 北京 résumé <b> a<b && x->y "q" \\n'
).split()
HEAD = (
    '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="write_file">\n'
    '<｜DSML｜parameter name="path" string="true">src/big.py</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="content" string="true">'
)
TAIL = "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"

Delta = tuple[str, list[int]]


def text_of(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS) + rng.choice((" ", " ", "\n", "\n    "))
        words.append(word)
        size += len(word)
    return "".join(words)[:chars]


def one_token_deltas(tokenizer, text: str) -> list[Delta]:
    """Deltas of one token each, decoded as vLLM's detokenizer does."""
    deltas: list[Delta] = []
    pending: list[int] = []
    for token_id in tokenizer.encode(text, add_special_tokens=False):
        pending.append(token_id)
        piece = tokenizer.decode(pending, skip_special_tokens=False)
        if piece.endswith("\ufffd"):
            deltas.append(("", [token_id]))
            continue
        deltas.append((piece, [token_id]))
        pending = []
    return deltas


def repeat_to(deltas: list[Delta], count: int) -> list[Delta]:
    return (deltas * (count // len(deltas) + 1))[:count]


def cpu_seconds(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def stream_tool_call(tool_cls, tokenizer, request, deltas: list[Delta]) -> str:
    parser = tool_cls(tokenizer)
    arguments: list[str] = []
    previous = ""
    for delta_text, delta_ids in deltas:
        message = parser.extract_tool_calls_streaming(
            previous, previous, delta_text, [], [], delta_ids, request
        )
        previous = "…"
        if message is not None:
            for call in message.tool_calls:
                arguments.append(call.function.arguments or "")
    return "".join(arguments)


def stream_reasoning(parser, prompt: list[int], deltas: list[Delta]) -> int:
    # One growing id list stands in for serving_chat's previous and current
    # ids: parsers that scan them pay for it, the others do not.
    ids: list[int] = []
    emitted = 0
    for delta_text, delta_ids in deltas:
        if parser.is_reasoning_end(prompt):
            raise AssertionError("a thinking prompt ends in <think>")
        message = parser.extract_reasoning_streaming(
            "…" if ids else "", "…", delta_text, ids, ids, delta_ids
        )
        ids.extend(delta_ids)
        if parser.is_reasoning_end(delta_ids):
            raise AssertionError("the reasoning never closes here")
        if message is not None and message.reasoning:
            emitted += len(message.reasoning)
    return emitted


def row(label: str, deltas: int, seconds: float, previous: float | None) -> str:
    ratio = f"{seconds / previous:.2f}" if previous else "–"
    return (
        f"| {label} | {deltas:,} | {seconds:.3f} | "
        f"{seconds / deltas * 1e6:.1f} | {ratio} |"
    )


def argument_table(tokenizer, tool_cls, request, sizes_kib: list[int]) -> list[str]:
    rng = random.Random(0)
    body_deltas = one_token_deltas(tokenizer, text_of(rng, 64 * 1024))
    chars_per_delta = sum(len(t) for t, _ in body_deltas) / len(body_deltas)
    head = one_token_deltas(tokenizer, HEAD)
    tail = one_token_deltas(tokenizer, TAIL) + [("", [tokenizer.eos_token_id])]

    rows = [
        "| String argument | Deltas | Parser CPU (s) | µs per delta | × previous |",
        "|---|---|---|---|---|",
    ]
    previous = None
    for kib in sizes_kib:
        body = repeat_to(body_deltas, int(kib * 1024 / chars_per_delta))
        deltas = head + body + tail
        expected = "".join(t for t, _ in body)

        def run(deltas=deltas):
            return stream_tool_call(tool_cls, tokenizer, request, deltas)

        arguments = run()
        assert json.loads(arguments)["content"] == expected
        seconds = cpu_seconds(run, 3)
        rows.append(row(f"{kib} KiB", len(deltas), seconds, previous))
        previous = seconds
    return rows


def reasoning_table(
    tokenizer, parser_cls, kwargs, sizes: list[int], title: str, repeats: int
) -> list[str]:
    rng = random.Random(1)
    base = one_token_deltas(tokenizer, text_of(rng, 40_000))
    prompt = tokenizer.encode(
        "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜><think>",
        add_special_tokens=False,
    )

    rows = [
        f"| {title} | Deltas | Parser CPU (s) | µs per delta | × previous |",
        "|---|---|---|---|---|",
    ]
    previous = None
    for tokens in sizes:
        deltas = repeat_to(base, tokens)

        def run(deltas=deltas):
            # A fresh dict: v0.13.0's deepseek_v3 parser pops keys from it.
            parser = parser_cls(tokenizer, chat_template_kwargs=dict(kwargs))
            return stream_reasoning(parser, prompt, deltas)

        assert run() > 0
        seconds = cpu_seconds(run, repeats)
        rows.append(row(f"{tokens // 1000}k tokens", tokens, seconds, previous))
        previous = seconds
    return rows


def patched_tree(root: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO))
    from tests.support import trees

    return trees.patched_vllm_and_model(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm", type=Path, help="a patched vLLM tree")
    parser.add_argument("--quick", action="store_true", help="smaller sizes only")
    args = parser.parse_args()

    kib = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    tokens = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 200_000]
    reference = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]
    if args.quick:
        kib, tokens, reference = kib[:6], tokens[:5], reference[:4]

    with tempfile.TemporaryDirectory(prefix="dsv4patch-bench-") as scratch:
        root = Path(scratch)
        if args.vllm is None:
            vllm, model = patched_tree(root)
        else:
            sys.path.insert(0, str(REPO))
            from tests.support import trees

            vllm, model = args.vllm, trees.model_dir(root / "model")
        sys.path.insert(0, str(vllm))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

        from tests.support import parser_driver as drv
        from vllm.reasoning import ReasoningParserManager

        tokenizer = drv.load_tokenizer(model)
        reasoning_cls, tool_cls = drv.parser_classes()
        v3_cls = ReasoningParserManager.get_reasoning_parser("deepseek_v3")
        request = drv.make_request(
            {
                "tools": [{"type": "function", "function": {"name": "write_file"}}],
                "tool_choice": "auto",
                "chat_template_kwargs": {"thinking": False},
            }
        )
        thinking = {"thinking": True}

        for table in (
            argument_table(tokenizer, tool_cls, request, kib),
            reasoning_table(
                tokenizer, reasoning_cls, thinking, tokens, "deepseek_v4 reasoning", 3
            ),
            reasoning_table(
                tokenizer, v3_cls, thinking, reference, "v0.13.0 deepseek_v3", 1
            ),
        ):
            print("\n".join(table))
            print()


if __name__ == "__main__":
    main()
