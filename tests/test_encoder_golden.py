"""Golden DeepSeek-V4 prompts through the patched vLLM's deepseek_v4 tokenizer.

Every vector in ../shared/golden must come out byte for byte as text, and as the
recorded token ids, from the tokenizer object vLLM's own registry builds for
`--tokenizer-mode deepseek_v4`.
"""

import copy
import json
from pathlib import Path

import pytest

from tests.support.trees import SHARED

GOLDEN = SHARED / "golden"
PROMPT_FILES = sorted((GOLDEN / "prompts").glob("*.json"))
TOKEN_IDS = json.loads((GOLDEN / "token_ids.json").read_text(encoding="utf-8"))
OFFICIAL = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def tokenizers(patched_vllm, model_path):
    """The registry's deepseek_v4 tokenizer, once per effort profile."""
    from vllm.tokenizers import get_tokenizer
    from vllm.tokenizers.deepseek_v4 import DeepseekV4Tokenizer

    tokenizer = get_tokenizer(str(model_path), tokenizer_mode="deepseek_v4")
    assert type(tokenizer) is DeepseekV4Tokenizer
    assert tokenizer.effort_profile == "original"
    return {
        "original": tokenizer,
        "0731": DeepseekV4Tokenizer(tokenizer.tokenizer, "0731"),
    }


def _load_case(path: Path) -> dict:
    case = json.loads(path.read_text(encoding="utf-8"))
    if case["tools"] is not None:
        # The official harness convention: the tools ride on messages[0].
        case["messages"][0] = {**case["messages"][0], "tools": case["tools"]}
    return case


def _render(tokenizer, case: dict, tokenize: bool):
    kwargs = {"thinking": case["thinking"]}
    if case["reasoning_effort"] is not None:
        kwargs["reasoning_effort"] = case["reasoning_effort"]
    return tokenizer.apply_chat_template(
        case["messages"],
        tokenize=tokenize,
        drop_thinking=case["drop_thinking"],
        **kwargs,
    )


@pytest.mark.parametrize("path", PROMPT_FILES, ids=[p.stem for p in PROMPT_FILES])
def test_golden_prompt_text(tokenizers, path):
    case = _load_case(path)
    before = copy.deepcopy(case["messages"])

    text = _render(tokenizers[case["encoder_variant"]], case, tokenize=False)

    assert text == case["expected_prompt"]
    assert case["messages"] == before, "the caller's messages were mutated"


@pytest.mark.parametrize("path", PROMPT_FILES, ids=[p.stem for p in PROMPT_FILES])
def test_golden_prompt_token_ids(tokenizers, path):
    case = _load_case(path)
    expected = TOKEN_IDS["cases"][case["id"]]
    tokenizer = tokenizers[case["encoder_variant"]]

    ids = _render(tokenizer, case, tokenize=True)

    assert ids == expected
    assert tokenizer.encode(case["expected_prompt"], add_special_tokens=False) == (
        expected
    )
    assert tokenizer.decode(expected) == case["expected_prompt"]


def test_every_golden_prompt_has_token_ids():
    assert {p.stem for p in PROMPT_FILES} == set(TOKEN_IDS["cases"])


@pytest.mark.parametrize("number", OFFICIAL)
def test_official_vector(tokenizers, number):
    raw = json.loads(
        (GOLDEN / "official" / f"test_input_{number}.json").read_text("utf-8")
    )
    expected = (GOLDEN / "official" / f"test_output_{number}.txt").read_text("utf-8")
    if isinstance(raw, dict):
        messages = [{**raw["messages"][0], "tools": raw["tools"]}]
        messages += raw["messages"][1:]
    else:
        messages = raw

    text = tokenizers["original"].apply_chat_template(
        messages, tokenize=False, thinking=number != 4
    )

    assert text == expected
