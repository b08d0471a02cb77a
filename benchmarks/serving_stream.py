"""How the patched serving layer scales with the length of one streamed answer.

    python benchmarks/serving_stream.py [--vllm PATCHED_TREE] [--sizes 4,16,64]

Streams one completion through the real vLLM OpenAI server (the E2E harness: the
scripted engine replays the text in MTP-like steps of 2-3 tokens, so the time is
the server's own work: detokenization, the reasoning and DSML parsers, the
tool_choice handling and SSE) and times it from the request to the last chunk.
Three shapes per size (KiB): plain content; a `write_file` call whose string
argument is that long, with tool_choice "auto"; the same with "required" (the
path patch 0004 adds). Prints a Markdown table with µs per token and the doubling
ratio (time ratio divided by size ratio; 1.0 means linear, 2.0 quadratic).

Without --vllm, pristine copies are patched with `dsv4patch apply` in a temporary
directory, as the test suite does.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.launch import (  # noqa: E402
    MODEL_NAME,
    PATCHED_FLAGS,
    HarnessServer,
)
from tests.harness.model import dsml_block, dsml_call  # noqa: E402
from tests.support import trees  # noqa: E402

WRITE_FILE = {"type": "function", "function": {
    "name": "write_file", "description": "Write a file.",
    "parameters": {"type": "object", "required": ["path", "content"], "properties": {
        "path": {"type": "string"}, "content": {"type": "string"}}},
}}
WORDS = "def return value index cache token stream parser delta 北京 Zürich".split()


def text_of(kib: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines, size = [], 0
    while size < kib * 1024:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        lines.append(line)
        size += len(line.encode()) + 1
    return "\n".join(lines)


def timed_stream(client: object, server: HarnessServer, shape: str,
                 kib: int) -> tuple[float, int]:
    """Seconds from request to last chunk, and the number of completion tokens."""
    body = text_of(kib)
    if shape == "content":
        server.push_script(body)
        extra: dict[str, object] = {}
    else:
        server.push_script(dsml_block(dsml_call(
            "write_file", {"path": "out.txt", "content": body})))
        extra = {"tools": [WRITE_FILE], "tool_choice": shape}

    started = time.perf_counter()
    received = 0
    usage = None
    for chunk in client.chat.completions.create(  # type: ignore[attr-defined]
            model=MODEL_NAME, messages=[{"role": "user", "content": "Write it."}],
            stream=True, stream_options={"include_usage": True}, **extra):
        for choice in chunk.choices:
            received += len(choice.delta.content or "")
            for call in choice.delta.tool_calls or []:
                received += len((call.function and call.function.arguments) or "")
        usage = chunk.usage or usage
    elapsed = time.perf_counter() - started
    if received < len(body):
        raise RuntimeError(f"{shape} {kib} KiB: only {received} characters came back")
    return elapsed, usage.completion_tokens if usage else 0


def table(server: HarnessServer, sizes: list[int]) -> list[str]:
    import openai

    # Request lines would drown the table.
    for name in ("openai", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused",
                           max_retries=0, timeout=600)
    timed_stream(client, server, "content", 1)  # warm-up
    rows = ["| shape | KiB | tokens | seconds | µs/token | doubling ratio |",
            "|---|---|---|---|---|---|"]
    for shape in ("content", "auto", "required"):
        previous: tuple[int, float] | None = None
        for kib in sizes:
            seconds, tokens = min(timed_stream(client, server, shape, kib)
                                  for _ in range(2))
            ratio = "" if previous is None else (
                f"{(seconds / previous[1]) / (kib / previous[0]):.2f}")
            rows.append(f"| {shape} | {kib} | {tokens} | {seconds:.2f} | "
                        f"{seconds / max(tokens, 1) * 1e6:.0f} | {ratio} |")
            previous = (kib, seconds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm", type=Path, help="a tree patched by dsv4patch")
    parser.add_argument("--sizes", default="4,16,64",
                        help="comma-separated KiB sizes (default 4,16,64)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="dsv4patch-bench-") as tmp:
        root = Path(tmp)
        vllm = args.vllm or trees.build_patched_trees(root / "trees")[0]
        model = trees.model_dir(root / "model")
        with HarnessServer(model, PATCHED_FLAGS, root / "server.log",
                           vllm_tree=vllm) as server:
            print("\n".join(table(server, sizes)))


if __name__ == "__main__":
    main()
