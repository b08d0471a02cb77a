"""How DeepSeek-V4 prompt rendering scales with the conversation's size.

    python benchmarks/encoder_scaling.py [--vllm PATCHED_TREE] [--max-turns 2000]

Renders agentic conversations of 1 to 2,000 turns (each turn: a user message, an
assistant reasoning and calling a tool, the tool's result; about 2,600 characters,
so 2,000 turns are about 5.2 million characters) with the patched vLLM's encoder, in
thinking mode with tools so that no history is dropped. Prints a Markdown table:
size, best-of time, and the doubling ratio (time ratio divided by size ratio; 1.0
means linear). A second table times the serving path at a few sizes: rendering
through the tokenizer wrapper, the one tokenization the deepseek_v4 mode does, and
the decode of the whole prompt back to text that the deepseek_v32 path adds.

Without --vllm, pristine copies are patched with `dsv4patch apply` in a temporary
directory, as the test suite does.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "weather policy office deploy cluster latency token prompt cache shard "
    "Zürich 北京 résumé value index query result build error retry queue"
).split()
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "run",
            "description": "Run a shell command in the sandbox.",
            "parameters": {
                "type": "object",
                "properties": {
                    "cmd": {"type": "string"},
                    "timeout": {"type": "integer"},
                },
                "required": ["cmd"],
            },
        },
    }
]


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def conversation(turns: int, seed: int = 0) -> list[dict]:
    """An agentic conversation of `turns` user/assistant/tool rounds."""
    rng = random.Random(seed)
    messages: list[dict] = [{"role": "system", "content": "You are an agent."}]
    for turn in range(turns):
        call_id = f"call_{turn}"
        messages += [
            {"role": "user", "content": _text(rng, 300)},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": _text(rng, 600),
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": "run",
                            "arguments": {"cmd": _text(rng, 200), "timeout": 30},
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": _text(rng, 1200)},
        ]
    messages[0]["tools"] = TOOLS
    return messages


def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def turn_counts(max_turns: int) -> list[int]:
    counts = []
    turns = 1
    while turns < max_turns:
        counts.append(turns)
        turns *= 2
    return [*counts, max_turns]


def render_table(max_turns: int) -> list[str]:
    from vllm.tokenizers.deepseek_v4_encoding import encode_messages

    rows = [
        "| Turns | Characters | Render time | Time ratio / size ratio |",
        "|---:|---:|---:|---:|",
    ]
    previous: tuple[int, float] | None = None
    ratios = []
    for turns in turn_counts(max_turns):
        messages = conversation(turns)
        prompt = encode_messages(messages, thinking_mode="thinking")
        repeats = 20 if turns <= 64 else 5
        seconds = best_of(lambda m=messages: encode_messages(m), repeats)

        ratio = ""
        if previous is not None and previous[1] > 0:
            value = (seconds / previous[1]) / (len(prompt) / previous[0])
            ratio = f"{value:.2f}"
            if turns >= 16:
                ratios.append(value)
        rows.append(
            f"| {turns:,} | {len(prompt):,} | {seconds * 1000:.2f} ms | {ratio} |"
        )
        previous = (len(prompt), seconds)

    rows.append("")
    if not ratios:
        rows.append("Too few sizes for a doubling ratio: use --max-turns 32 or more.")
        return rows
    rows.append(
        f"Median normalised doubling ratio from 16 turns on: "
        f"{statistics.median(ratios):.2f} (1.0 = linear, 2.0 = quadratic)."
    )
    return rows


def serving_table(model: Path, sizes: list[int]) -> list[str]:
    from vllm.tokenizers import get_tokenizer

    tokenizer = get_tokenizer(str(model), tokenizer_mode="deepseek_v4")
    rows = [
        "| Turns | Prompt tokens | Render (wrapper) | Tokenize once | Decode back |",
        "|---:|---:|---:|---:|---:|",
    ]
    for turns in sizes:
        messages = conversation(turns)
        prompt = tokenizer.render_prompt(messages, thinking=True)
        ids = tokenizer.encode(prompt, add_special_tokens=False)

        render = best_of(
            lambda m=messages: tokenizer.render_prompt(m, thinking=True), 3
        )
        encode = best_of(
            lambda p=prompt: tokenizer.encode(p, add_special_tokens=False), 3
        )
        decode = best_of(lambda i=ids: tokenizer.decode(i), 3)
        rows.append(
            f"| {turns:,} | {len(ids):,} | {render * 1000:.0f} ms "
            f"| {encode:.2f} s | {decode:.2f} s |"
        )
    return rows


def patched_tree(root: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO))
    from tests.support import trees

    return trees.patched_vllm_and_model(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm", type=Path, help="a patched vLLM tree")
    parser.add_argument("--max-turns", type=int, default=2000)
    parser.add_argument(
        "--serving-turns", type=int, nargs="*", default=[100, 500, 2000]
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dsv4patch-bench-") as scratch:
        root = Path(scratch)
        if args.vllm is None:
            vllm, model = patched_tree(root)
        else:
            sys.path.insert(0, str(REPO))
            from tests.support import trees

            vllm, model = args.vllm, trees.model_dir(root / "model")
        sys.path.insert(0, str(vllm))

        print("\n".join(render_table(args.max_turns)))
        print()
        print("\n".join(serving_table(model, args.serving_turns)))


if __name__ == "__main__":
    main()
