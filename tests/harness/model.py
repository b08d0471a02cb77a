"""The scripted model: what a DeepSeek-V4 checkpoint writes for the operator prompts.

It sees only the rendered prompt, as a real model would: whether the prompt ends in
thinking mode (`<think>`) or chat mode, whether the reasoning-effort preamble is
there, which tools the tools block offers, and the last user turn. It knows nothing
about the client's expectations; everything it writes is DeepSeek-V4 output text,
DSML tool calls included.
"""

from __future__ import annotations

import json

from tests.harness.engine import Script

USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_OPEN = "<think>"
MAX_EFFORT = "Reasoning Effort: Absolute maximum"


def dsml_call(name: str, params: dict[str, object]) -> str:
    """One DSML invoke; strings raw, everything else as JSON."""
    lines = [f'<｜DSML｜invoke name="{name}">']
    for key, value in params.items():
        if isinstance(value, str):
            lines.append(
                f'<｜DSML｜parameter name="{key}" string="true">{value}'
                "</｜DSML｜parameter>"
            )
        else:
            lines.append(
                f'<｜DSML｜parameter name="{key}" string="false">'
                f"{json.dumps(value, ensure_ascii=False)}</｜DSML｜parameter>"
            )
    lines.append("</｜DSML｜invoke>")
    return "\n".join(lines)


def dsml_block(*calls: str) -> str:
    return "\n\n<｜DSML｜tool_calls>\n" + "\n".join(calls) + "\n</｜DSML｜tool_calls>"


def last_user_turn(prompt: str) -> str:
    turn = prompt.rsplit(USER, 1)[-1]
    return turn.split(ASSISTANT, 1)[0]


def offers_tool(prompt: str, name: str) -> bool:
    return f'"name": "{name}"' in prompt or f'"name":"{name}"' in prompt


def _answer(prompt: str) -> tuple[str, str]:
    """(reasoning, visible part) for the prompt's last user turn."""
    question = last_user_turn(prompt)
    if "17*19" in question:
        return "17*19 = 17*20 - 17 = 340 - 17 = 323.", "323"
    if "weather" in question.lower() and offers_tool(prompt, "get_weather"):
        city = next(
            (c for c in ("Beijing", "Paris", "Berlin", "Tokyo") if c in question),
            "Beijing",
        )
        return (
            f"The user wants the weather in {city}; call get_weather.",
            dsml_block(dsml_call("get_weather", {"location": city})),
        )
    if "seats" in question.lower() and offers_tool(prompt, "book_seats"):
        return (
            "Two passengers, window seats, train IC 512.",
            dsml_block(dsml_call("book_seats", {
                "count": 2,
                "window": True,
                "passengers": ["Alice", "Bob"],
                "train": "IC 512",
            })),
        )
    return "Nothing to compute.", "I do not know."


def choose(prompt: str) -> Script:
    """The completion for `prompt`, in the mode the prompt puts the model in."""
    reasoning, visible = _answer(prompt)
    if not prompt.endswith(THINK_OPEN):
        # Chat mode: the prompt already closed the thinking block.
        return Script(text=visible)
    if MAX_EFFORT in prompt:
        reasoning += " Double-checked every step, as asked."
    return Script(text=f"{reasoning}</think>{visible}")
