"""Streaming through the fast detokenizer (patch 0004) gives the same text as before.

The deepseek_v4 tokenizer wrapper now streams through the wrapped fast tokenizer's
DecodeStream instead of vLLM's Python fallback. Every golden completion and every
parser case, decoded one token at a time both ways, must come out identical, with
special tokens skipped and kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.trees import SHARED


def _texts() -> list[tuple[str, str]]:
    golden = json.loads((SHARED / "golden" / "outputs.json").read_text("utf-8"))
    texts = [(case["id"], case["output"]) for case in golden["cases"]]
    cases = json.loads((SHARED / "cases" / "parser-cases.json").read_text("utf-8"))
    for case in cases:
        output = case["model_output"]
        joined = output if isinstance(output, str) else "".join(output)
        texts.append((case["id"], joined))
    return texts


TEXTS = _texts()


@pytest.fixture(scope="module")
def tokenizer(patched_vllm: Path, model_path: Path) -> Any:
    from vllm.tokenizers import get_tokenizer

    return get_tokenizer(str(model_path), tokenizer_mode="deepseek_v4")


def request(tokenizer: Any, skip_special_tokens: bool) -> Any:
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine import EngineCoreRequest

    prompt_text = "<｜begin▁of▁sentence｜><｜User｜>Go.<｜Assistant｜><think>"
    prompt = tokenizer.encode(prompt_text, add_special_tokens=False)
    return EngineCoreRequest(
        request_id="r", prompt_token_ids=prompt, mm_features=None,
        sampling_params=SamplingParams(skip_special_tokens=skip_special_tokens),
        pooling_params=None, eos_token_id=None, arrival_time=0.0, lora_request=None,
        cache_salt=None, data_parallel_rank=None,
    )


def stream(detokenizer: Any, token_ids: list[int]) -> str:
    for token_id in token_ids:
        detokenizer.update([token_id], False)
    return detokenizer.output_text


def test_deepseek_v4_tokenizer_gets_the_fast_detokenizer(tokenizer: Any) -> None:
    from vllm.v1.engine.detokenizer import (
        FastIncrementalDetokenizer,
        IncrementalDetokenizer,
    )

    new = request(tokenizer, True)
    chosen = IncrementalDetokenizer.from_new_request(tokenizer, new)

    assert isinstance(chosen, FastIncrementalDetokenizer)


@pytest.mark.parametrize("skip", [True, False], ids=["skip-special", "keep-special"])
@pytest.mark.parametrize(("case_id", "text"), TEXTS, ids=[i for i, _ in TEXTS])
def test_fast_and_python_detokenizers_agree(tokenizer: Any, case_id: str, text: str,
                                            skip: bool) -> None:
    from vllm.v1.engine.detokenizer import (
        FastIncrementalDetokenizer,
        SlowIncrementalDetokenizer,
    )

    token_ids = tokenizer.encode(text, add_special_tokens=False)
    slow = SlowIncrementalDetokenizer(tokenizer, request(tokenizer, skip))
    fast = FastIncrementalDetokenizer(tokenizer.tokenizer, request(tokenizer, skip))

    assert stream(fast, token_ids) == stream(slow, token_ids)
