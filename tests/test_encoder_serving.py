"""The deepseek_v4 chat path through vLLM's real OpenAI app, in process.

Requests go through vLLM's FastAPI app, ChatCompletionRequest validation and
`_preprocess_chat`; only the model is the scripted engine of tests/harness. No
socket is opened: the app is called through httpx's ASGI transport.
"""

import asyncio
import json
import os
import shutil

import httpx
import pytest

from tests.support.trees import SHARED

CASES = json.loads(
    (SHARED / "cases" / "encoding-cases.json").read_text("utf-8")
)
BASE_FLAGS = (
    "--tokenizer-mode",
    "deepseek_v4",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "deepseek_v32",
    "--max-model-len",
    "8192",
)
WEATHER_TOOL = CASES[0]["request"]["tools"]


class ChatApp:
    """vLLM's OpenAI app over the scripted engine, one per model and flag set."""

    def __init__(self, model_path):
        self.model_path = str(model_path)
        self.loop = asyncio.new_event_loop()
        self.apps: dict[tuple[str, ...], tuple[object, object]] = {}

    def _build(self, model: str, flags: tuple[str, ...]):
        from tests.harness.server import _parse, _use_cpu_platform

        # Before anything else resolves vLLM's platform from this device-less build.
        _use_cpu_platform()

        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.openai.api_server import build_app, init_app_state
        from vllm.tokenizers import cached_tokenizer_from_config

        from tests.harness import model as scripted_model
        from tests.harness.engine import ScriptedEngineClient

        _, args = _parse(["--port", "1", "--", "--model", model, *flags])
        config = AsyncEngineArgs.from_cli_args(args).create_engine_config()
        client = ScriptedEngineClient(
            vllm_config=config,
            tokenizer=cached_tokenizer_from_config(config.model_config),
            choose=scripted_model.choose,
        )
        app = build_app(args)
        self.loop.run_until_complete(init_app_state(client, app.state, args))
        return app, client

    def app(self, flags=(), model: str | None = None):
        """The (app, scripted engine client) pair for a model and flag set."""
        model = model or self.model_path
        key = (model, *flags)
        if key not in self.apps:
            self.apps[key] = self._build(model, (*BASE_FLAGS, *flags))
        return self.apps[key]

    def post(self, body: dict, flags=(), model: str | None = None):
        """POST a chat request; return (status, json, prompt text or None)."""
        model = model or self.model_path
        app, client = self.app(flags, model)
        seen = len(client.requests)

        async def send():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1"
            ) as http:
                return await http.post(
                    "/v1/chat/completions", json={"model": model, **body}
                )

        response = self.loop.run_until_complete(send())
        prompt = None
        if len(client.requests) > seen:
            prompt = client.requests[-1].prompt_text
        return response.status_code, response.json(), prompt

    def close(self):
        # The app leaves background tasks (the async tokenizer's batcher) behind.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


@pytest.fixture(scope="module")
def chat(patched_vllm, model_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    app = ChatApp(model_path)
    yield app
    app.close()


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# --- encoding cases from public bug reports -----------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_encoding_case(chat, case):
    request = dict(case["request"])
    flags = tuple(request.pop("server_flags", ()))
    expected = case["expected"]

    status, body, prompt = chat.post(request, flags)

    assert status == 200, body
    if "prompt_equals" in expected:
        assert prompt == expected["prompt_equals"]
    for prefix in expected.get("prompt_startswith", ()):
        assert prompt.startswith(prefix)
    for suffix in expected.get("prompt_endswith", ()):
        assert prompt.endswith(suffix)
    for part in expected.get("prompt_contains", ()):
        assert part in prompt
    for part in expected.get("prompt_not_contains", ()):
        assert part not in prompt


# --- thinking switch and reasoning_effort --------------------------------------


def test_no_kwargs_answers_in_chat_mode(chat):
    status, _, prompt = chat.post({"messages": _user("What is 17*19?")})

    assert status == 200
    assert prompt.endswith("<｜User｜>What is 17*19?<｜Assistant｜></think>")


@pytest.mark.parametrize("key", ["thinking", "enable_thinking"])
def test_thinking_kwarg_opens_reasoning(chat, key):
    status, _, prompt = chat.post(
        {"messages": _user("Hi"), "chat_template_kwargs": {key: True}}
    )

    assert status == 200
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>"


def test_top_level_max_effort_renders_preamble(chat):
    status, body, prompt = chat.post(
        {
            "messages": _user("What is 17*19?"),
            "chat_template_kwargs": {"thinking": True},
            "reasoning_effort": "max",
        }
    )

    assert status == 200, body
    assert prompt.startswith(
        "<｜begin▁of▁sentence｜>Reasoning Effort: Absolute maximum with no shortcuts"
    )
    assert prompt.endswith("<｜Assistant｜><think>")


def test_kwargs_effort_wins_over_top_level(chat):
    status, _, prompt = chat.post(
        {
            "messages": _user("Hi"),
            "chat_template_kwargs": {"thinking": True, "reasoning_effort": "high"},
            "reasoning_effort": "max",
        }
    )

    assert status == 200
    assert "Reasoning Effort" not in prompt


def test_effort_none_switches_thinking_off(chat):
    status, _, prompt = chat.post(
        {
            "messages": _user("Hi"),
            "chat_template_kwargs": {"thinking": True},
            "reasoning_effort": "none",
        }
    )

    assert status == 200
    assert prompt.endswith("<｜Assistant｜></think>")


@pytest.mark.parametrize(
    ("switch", "ending"),
    [("false", "</think>"), ("FALSE", "</think>"), ("True", "<think>")],
)
def test_thinking_switch_as_a_string(chat, switch, ending):
    status, _, prompt = chat.post(
        {"messages": _user("Hi"), "chat_template_kwargs": {"thinking": switch}}
    )

    assert status == 200
    assert prompt.endswith("<｜Assistant｜>" + ending)


@pytest.fixture(scope="module")
def model_0731(model_path, tmp_path_factory):
    """A copy of the test model whose bundled encoder is the 0731 one."""
    path = tmp_path_factory.mktemp("checkpoint") / "model"
    shutil.copytree(model_path, path)
    (path / "encoding").mkdir()
    (path / "encoding" / "encoding_dsv4.py").write_text(
        'EFFORT_MAX = "Reasoning Effort: Beyond maximum \\u2014 ..."\n'
    )
    return str(path)


@pytest.mark.parametrize(
    ("effort", "preamble"),
    [
        ("minimal", None),
        ("low", None),
        ("medium", None),
        ("high", "Reasoning Effort: Absolute maximum"),
        ("xhigh", "Reasoning Effort: Absolute maximum"),
        ("max", "Reasoning Effort: Beyond maximum"),
        (None, "Reasoning Effort: Absolute maximum"),
    ],
)
def test_0731_checkpoint_is_detected(chat, model_0731, effort, preamble):
    body = {"messages": _user("Hi"), "chat_template_kwargs": {"thinking": True}}
    if effort is not None:
        body["reasoning_effort"] = effort

    status, _, prompt = chat.post(body, model=model_0731)

    assert status == 200
    if preamble is None:
        assert prompt.startswith("<｜begin▁of▁sentence｜><｜User｜>Hi")
    else:
        assert prompt.startswith("<｜begin▁of▁sentence｜>" + preamble)


# --- the serving path renders text and never decodes the prompt -----------------


def test_preprocess_tokenizes_once_and_never_decodes(chat, monkeypatch):
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest

    app, client = chat.app()
    serving = app.state.openai_serving_chat
    tokenizer = client.tokenizer
    calls = {"decode": 0, "apply_chat_template": 0}

    def spy(name):
        method = getattr(tokenizer, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        return counted

    for name in calls:
        monkeypatch.setattr(tokenizer, name, spy(name))
    request = ChatCompletionRequest.model_validate(
        {
            "model": chat.model_path,
            "messages": _user("Weather in Paris?"),
            "tools": WEATHER_TOOL,
            "chat_template_kwargs": {"thinking": True},
        }
    )

    _, prompts = chat.loop.run_until_complete(
        serving._preprocess_chat(
            request,
            tokenizer,
            request.messages,
            chat_template=None,
            chat_template_content_format="auto",
            tool_dicts=WEATHER_TOOL,
            chat_template_kwargs=request.chat_template_kwargs,
        )
    )

    text = prompts[0]["prompt"]
    assert text.endswith("<｜User｜>Weather in Paris?<｜Assistant｜><think>")
    assert prompts[0]["prompt_token_ids"] == tokenizer.encode(
        text, add_special_tokens=False
    )
    assert calls == {"decode": 0, "apply_chat_template": 0}


# --- request shapes the chat path must carry through -------------------------


def test_history_arguments_as_json_string(chat):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]

    status, _, prompt = chat.post({"messages": messages, "tools": WEATHER_TOOL})

    assert status == 200
    assert (
        '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>'
        in prompt
    )
    assert prompt.endswith(
        "<｜User｜><tool_result>sunny</tool_result><｜Assistant｜></think>"
    )


def test_task_and_prefix_keys_reach_the_encoder(chat):
    messages = [
        {"role": "user", "content": "ramen", "task": "query"},
        {"role": "assistant", "content": "best ramen", "prefix": True},
    ]

    status, body, prompt = chat.post(
        {"messages": messages, "add_generation_prompt": False}
    )

    assert status == 200, body
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>ramen<｜query｜>best ramen"


def test_continue_final_message_drops_eos(chat):
    messages = _user("Count") + [{"role": "assistant", "content": "1, 2,"}]

    status, body, prompt = chat.post(
        {
            "messages": messages,
            "add_generation_prompt": False,
            "continue_final_message": True,
        }
    )

    assert status == 200, body
    assert prompt.endswith("<｜User｜>Count<｜Assistant｜></think>1, 2,")


def test_tools_after_developer_message(chat):
    messages = [{"role": "developer", "content": "Be terse."}] + _user("Weather?")

    status, _, prompt = chat.post({"messages": messages, "tools": WEATHER_TOOL})

    assert status == 200
    assert prompt.startswith("<｜begin▁of▁sentence｜><｜User｜>Be terse.\n\n## Tools")
    assert prompt.count("## Tools") == 1


def test_unset_tool_fields_are_not_rendered(chat):
    tools = [{"type": "function", "function": {"name": "ping"}}]

    status, _, prompt = chat.post({"messages": _user("ping"), "tools": tools})

    assert status == 200
    assert '\n\n{"name": "ping"}\n\nYou MUST strictly follow' in prompt


# --- bad requests: 400 naming the problem ---------------------------------------


BAD_REQUESTS = {
    "unknown-role": (
        {"messages": [{"role": "robot", "content": "beep"}]},
        ["'robot'", "latest_reminder"],
    ),
    "effort-in-kwargs-outside-table": (
        {
            "messages": _user("Hi"),
            "chat_template_kwargs": {"thinking": True, "reasoning_effort": "ultra"},
        },
        ["'ultra'", "xhigh, max"],
    ),
    "top-level-effort-outside-table": (
        {"messages": _user("Hi"), "reasoning_effort": "ultra"},
        ["ultra", "'max'"],
    ),
    "image-part": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        },
                    ],
                }
            ]
        },
        ["'image_url'", "only text"],
    ),
    "arguments-not-json": (
        {
            "messages": _user("Hi")
            + [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": "{city: Paris",
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ]
        },
        ["'get_weather'", "not valid JSON"],
    ),
    "arguments-json-array": (
        {
            "messages": _user("Hi")
            + [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "[1, 2]"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ]
        },
        ["'get_weather'", "JSON object"],
    ),
    "empty-developer-message": (
        {"messages": [{"role": "developer", "content": ""}] + _user("Hi")},
        ["developer", "non-empty"],
    ),
    "thinking-not-a-boolean": (
        {"messages": _user("Hi"), "chat_template_kwargs": {"thinking": "0"}},
        ["'thinking'", "true or false"],
    ),
    "thinking-switches-disagree": (
        {
            "messages": _user("Hi"),
            "chat_template_kwargs": {"thinking": True, "enable_thinking": False},
        },
        ["'thinking'", "'enable_thinking'", "disagree"],
    ),
    "unknown-task": (
        {"messages": [{"role": "user", "content": "x", "task": "summarize"}]},
        ["'summarize'", "read_url"],
    ),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_request_is_400_naming_the_problem(chat, name):
    body, fragments = BAD_REQUESTS[name]

    status, response, prompt = chat.post(body)

    assert status == 400, response
    message = response["error"]["message"]
    for fragment in fragments:
        assert fragment in message
    assert prompt is None


def test_server_still_answers_after_bad_requests(chat):
    for body, _ in BAD_REQUESTS.values():
        chat.post(body)

    status, _, _ = chat.post({"messages": _user("What is 17*19?")})

    assert status == 200
