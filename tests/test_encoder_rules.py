"""Encoder rules of spec/dsv4-format.md that the golden vectors do not pin.

The encoder module comes from the patched vLLM tree, as every `import vllm` in
the suite does.
"""

import copy
import importlib.util
import json
import pickle
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"


@pytest.fixture(scope="module")
def enc(patched_vllm):
    from vllm.tokenizers import deepseek_v4_encoding

    return deepseek_v4_encoding


def _chat(enc, messages, **kwargs):
    return enc.encode_messages(messages, thinking_mode="chat", **kwargs)


def _think(enc, messages, **kwargs):
    return enc.encode_messages(messages, thinking_mode="thinking", **kwargs)


def _call(call_id, name, arguments):
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


# --- thinking switch -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (None, False),
        ({}, False),
        ({"reasoning_effort": "max"}, False),
        ({"thinking": False}, False),
        ({"thinking": True}, True),
        ({"enable_thinking": True}, True),
        ({"thinking": "false"}, False),
        ({"thinking": "False"}, False),
        ({"enable_thinking": "TRUE"}, True),
        ({"thinking": None, "enable_thinking": True}, True),
        ({"thinking": True, "enable_thinking": "true"}, True),
        ({"thinking": "false", "reasoning_effort": "max"}, False),
        ({"thinking": True, "reasoning_effort": "none"}, False),
        ({"enable_thinking": True, "reasoning_effort": "none"}, False),
        ({"thinking": True, "reasoning_effort": "high"}, True),
    ],
)
def test_thinking_requested(enc, kwargs, expected):
    assert enc.thinking_requested(kwargs) is expected


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"thinking": "0"}, "'thinking'"),
        ({"thinking": "yes"}, "'thinking'"),
        ({"enable_thinking": 1}, "'enable_thinking'"),
        ({"thinking": []}, "'thinking'"),
        ({"thinking": True, "enable_thinking": False}, "disagree"),
        ({"thinking": "true", "enable_thinking": "False"}, "disagree"),
        ({"thinking": "no", "reasoning_effort": "none"}, "'thinking'"),
    ],
)
def test_thinking_switch_refuses_what_it_cannot_read(enc, kwargs, named):
    with pytest.raises(ValueError, match=named):
        enc.thinking_requested(kwargs)


# --- reasoning effort --------------------------------------------------------------


ORIGINAL = {
    None: None,
    "minimal": "high",
    "low": "high",
    "medium": "high",
    "high": "high",
    "xhigh": "max",
    "max": "max",
    "none": None,
}
PROFILE_0731 = {
    None: "high",
    "minimal": "low",
    "low": "low",
    "medium": "low",
    "high": "high",
    "xhigh": "high",
    "max": "max",
    "none": None,
}


@pytest.mark.parametrize(
    ("profile", "table"), [("original", ORIGINAL), ("0731", PROFILE_0731)]
)
def test_request_effort_table(enc, profile, table):
    for value, expected in table.items():
        assert enc.resolve_request_effort(value, profile) == expected, value


@pytest.mark.parametrize("value", ["ultra", "HIGH", "", 3, ["max"]])
def test_request_effort_outside_table(enc, value):
    with pytest.raises(ValueError, match="accepted values are none, minimal"):
        enc.resolve_request_effort(value, "original")


def test_original_encoder_rejects_low_even_in_chat_mode(enc):
    with pytest.raises(ValueError, match="'low' for the original"):
        _chat(enc, [{"role": "user", "content": "x"}], reasoning_effort="low")


def test_0731_encoder_default_renders_no_preamble(enc):
    prompt = _think(enc, [{"role": "user", "content": "x"}], profile="0731")

    assert prompt == BOS + "<｜User｜>x<｜Assistant｜><think>"


def test_preamble_only_in_thinking_mode(enc):
    messages = [{"role": "user", "content": "x"}]

    assert "Absolute" not in _chat(enc, messages, reasoning_effort="max")
    assert _think(enc, messages, reasoning_effort="max").startswith(
        BOS + enc.EFFORT_ABSOLUTE_MAXIMUM + "<｜User｜>"
    )


def test_preamble_texts_are_exact(enc):
    import hashlib

    def digest(text):
        return hashlib.sha256(text.encode()).hexdigest()

    assert len(enc.EFFORT_ABSOLUTE_MAXIMUM.encode()) == 476
    assert digest(enc.EFFORT_ABSOLUTE_MAXIMUM).startswith("f7a24f3b3050d4a8")
    assert len(enc.EFFORT_BEYOND_MAXIMUM) == 526
    assert digest(enc.EFFORT_BEYOND_MAXIMUM).startswith("53fb31b8392ec5b4")
    assert digest(enc.TOOLS_BLOCK_HEAD).startswith("c7c9042638154a23")
    assert digest(enc.TOOLS_BLOCK_TAIL).startswith("690702850fe25651")


# --- roles and turns -----------------------------------------------------------------


def test_unknown_role_is_refused(enc):
    with pytest.raises(ValueError, match="'function'"):
        _chat(enc, [{"role": "function", "content": "x"}])


def test_consecutive_assistants_each_end_with_eos(enc):
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "x"},
        {"role": "assistant", "content": "y"},
    ]

    assert _chat(enc, messages).endswith(f"</think>x{EOS}y{EOS}")


def test_mid_conversation_system_is_glued(enc):
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "system", "content": "new rule"},
        {"role": "user", "content": "r"},
    ]

    assert f"a{EOS}new rule<｜User｜>r<｜Assistant｜></think>" in _chat(enc, messages)


def test_reminder_after_user_gets_the_transition(enc):
    messages = [
        {"role": "user", "content": "q"},
        {"role": "latest_reminder", "content": "2026-01-01"},
    ]

    assert _think(enc, messages) == (
        BOS + "<｜User｜>q<｜Assistant｜><think><｜latest_reminder｜>2026-01-01"
    )


def test_developer_before_last_user_is_dropped_in_thinking(enc):
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "developer", "content": "dev"},
        {"role": "assistant", "content": "answer", "reasoning_content": "r"},
        {"role": "user", "content": "next"},
    ]

    assert _think(enc, messages) == (
        BOS + f"SYSanswer{EOS}<｜User｜>next<｜Assistant｜><think>"
    )


def test_empty_developer_is_refused(enc):
    with pytest.raises(ValueError, match="developer"):
        _chat(enc, [{"role": "developer", "content": ""}])


@pytest.mark.parametrize(
    ("mode", "assistant", "ending"),
    [
        ("chat", {"content": "PRE"}, "<｜Assistant｜></think>PRE"),
        ("thinking", {"content": "PRE"}, "<｜Assistant｜><think></think>PRE"),
        (
            "thinking",
            {"content": "", "reasoning_content": "R"},
            "<｜Assistant｜><think>R</think>",
        ),
    ],
)
def test_prefix_continuation(enc, mode, assistant, ending):
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "wo_eos": True, **assistant},
    ]

    assert enc.encode_messages(messages, thinking_mode=mode).endswith(ending)


def test_task_turn_is_not_merged_and_next_answer_has_no_reasoning(enc):
    messages = [
        {"role": "user", "content": "a", "task": "title"},
        {"role": "user", "content": "b"},
    ]
    assert _chat(enc, messages) == BOS + "<｜User｜>a<｜User｜>b<｜Assistant｜></think>"

    messages = [
        {"role": "user", "content": "a", "task": "action"},
        {"role": "assistant", "content": "Search", "reasoning_content": "r"},
    ]
    assert _think(enc, messages) == (
        BOS + f"<｜User｜>a<｜Assistant｜><think><｜action｜>Search{EOS}"
    )


def test_unknown_task_is_refused(enc):
    with pytest.raises(ValueError, match="'summarize'"):
        _chat(enc, [{"role": "user", "content": "x", "task": "summarize"}])


def test_context_renders_only_new_messages(enc):
    context = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "x", "reasoning_content": "r"},
    ]

    prompt = _think(
        enc, [{"role": "user", "content": "b"}], context=context, reasoning_effort="max"
    )

    assert prompt == "<｜User｜>b<｜Assistant｜><think>"


# --- tool results and tool calls -----------------------------------------------------


def test_tool_results_sorted_by_call_order_text_stays(enc):
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [_call("a", "f", "{}"), _call("b", "g", "{}")],
        },
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "user", "content": "between"},
        {"role": "tool", "tool_call_id": "a", "content": "A"},
    ]

    assert _chat(enc, messages).endswith(
        "<｜User｜><tool_result>A</tool_result>\n\nbetween\n\n"
        "<tool_result>B</tool_result><｜Assistant｜></think>"
    )


def test_tool_results_without_ids_keep_arrival_order(enc):
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [_call("a", "f", "{}"), _call("b", "g", "{}")],
        },
        {"role": "tool", "content": "second"},
        {"role": "tool", "content": "first"},
    ]

    assert "<tool_result>second</tool_result>\n\n<tool_result>first" in _chat(
        enc, messages
    )


def test_tool_result_content_shapes(enc):
    content = [
        {"type": "text", "text": "a"},
        {"type": "image_url"},
        {"type": "text", "text": "b"},
    ]
    messages = [
        {"role": "user", "content": "go"},
        {"role": "tool", "content": content},
        {"role": "tool", "content": None},
    ]

    assert (
        "<tool_result>a\n\n[Unsupported image_url]\n\nb</tool_result>\n\n"
        "<tool_result>None</tool_result>"
    ) in _chat(enc, messages)


@pytest.mark.parametrize(
    ("arguments", "params"),
    [
        (
            '{"q": "x", "n": 1e2}',
            '<｜DSML｜parameter name="q" string="true">x</｜DSML｜parameter>\n'
            '<｜DSML｜parameter name="n" string="false">100.0</｜DSML｜parameter>',
        ),
        ({"q": "x"}, '<｜DSML｜parameter name="q" string="true">x</｜DSML｜parameter>'),
        (
            "not json",
            '<｜DSML｜parameter name="arguments" string="true">not json'
            "</｜DSML｜parameter>",
        ),
        ("", ""),
        (None, ""),
    ],
)
def test_call_arguments(enc, arguments, params):
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [_call("a", "f", arguments)],
        },
    ]

    invoke = f'<｜DSML｜invoke name="f">\n{params}\n</｜DSML｜invoke>'
    assert invoke in _chat(enc, messages)


@pytest.mark.parametrize("arguments", ["[1, 2]", "5", "null", ["x"]])
def test_call_arguments_not_an_object_are_refused(enc, arguments):
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [_call("a", "f", arguments)],
        },
    ]

    with pytest.raises(ValueError, match="'f' must be a JSON object"):
        _chat(enc, messages)


def test_tools_on_user_message_are_ignored_and_keep_dropping(enc):
    tools = [{"type": "function", "function": {"name": "f"}}]
    messages = [
        {"role": "user", "content": "a", "tools": tools},
        {"role": "assistant", "content": "x", "reasoning_content": "r"},
        {"role": "user", "content": "b"},
    ]

    prompt = _think(enc, messages)

    assert "## Tools" not in prompt
    assert "r</think>" not in prompt


def test_response_format_after_tools(enc):
    tools = [{"type": "function", "function": {"name": "f"}}]
    messages = [
        {
            "role": "system",
            "content": "S",
            "tools": tools,
            "response_format": {"type": "json_object"},
        },
        {"role": "user", "content": "q", "response_format": {"x": 1}},
    ]

    prompt = _chat(enc, messages)

    assert "tool calls.\n\n\n## Response Format:\n\nYou MUST strictly adhere" in prompt
    assert prompt.count("## Response Format") == 1


# --- request-level tools and caller data ------------------------------------------


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {}}}]


@pytest.mark.parametrize(
    ("roles", "carrier"),
    [
        (["system", "user"], 0),
        (["developer", "user"], 0),
        (["system", "developer", "user"], 0),
        (["user", "system", "user"], None),
        (["user"], None),
    ],
)
def test_attach_tools(enc, roles, carrier):
    messages = [{"role": role, "content": role} for role in roles]
    before = copy.deepcopy(messages)

    result = enc.attach_tools(messages, TOOLS)

    assert messages == before
    if carrier is None:
        assert result[0] == {"role": "system", "content": "", "tools": TOOLS}
        assert result[1:] == messages
    else:
        assert result[carrier]["tools"] == TOOLS
        assert [m for i, m in enumerate(result) if i != carrier] == [
            m for i, m in enumerate(messages) if i != carrier
        ]


def test_encoding_never_mutates_the_caller(enc):
    messages = [
        {"role": "system", "content": "S", "tools": TOOLS},
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "r",
            "tool_calls": [_call("b", "f", '{"x": 1}'), _call("a", "f", {"y": 2})],
        },
        {"role": "tool", "tool_call_id": "a", "content": "A"},
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "user", "content": "more"},
    ]
    before = copy.deepcopy(messages)

    _think(enc, messages)
    _think(enc, messages, drop_thinking=False)

    assert messages == before


# --- properties ----------------------------------------------------------------------

# Text that cannot contain a special token, so turns cannot blur into each other.
PLAIN = st.text(alphabet=st.characters(blacklist_characters="<>｜"), max_size=30)


@settings(max_examples=60, deadline=None)
@given(turns=st.lists(st.tuples(PLAIN, PLAIN), min_size=1, max_size=6), last=PLAIN)
def test_chat_prompt_extends_the_previous_prompt(enc, turns, last):
    # Prefix caching relies on this: in chat mode, appending a turn never
    # changes the text already rendered for the earlier ones.
    history: list[dict] = []
    previous = None
    for question, answer in turns:
        history.append({"role": "user", "content": question})
        prompt = _chat(enc, history)
        if previous is not None:
            assert prompt.startswith(previous)
        assert prompt.endswith("<｜Assistant｜></think>")
        history.append({"role": "assistant", "content": answer})
        previous = _chat(enc, history)
        assert previous.startswith(prompt)

    history.append({"role": "user", "content": last})
    assert _chat(enc, history).startswith(previous)


# --- module and serving glue --------------------------------------------------------


def test_encoder_module_imports_without_torch(patched_vllm):
    path = patched_vllm / "vllm" / "tokenizers" / "deepseek_v4_encoding.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('enc', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert module.encode_messages([{'role': 'user', 'content': 'x'}])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'vllm')))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
    assert importlib.util.find_spec("vllm.tokenizers.deepseek_v4_encoding")


@pytest.mark.parametrize(
    ("setting", "encoder_text", "name", "expected"),
    [
        ("auto", None, "model", "original"),
        ("auto", "PREAMBLE = 'Absolute maximum'", "model", "original"),
        ("auto", "PREAMBLE = 'Beyond maximum \u2014'", "model", "0731"),
        ("auto", "PREAMBLE = 'Absolute maximum'", "DeepSeek-V4-Flash-0731", "original"),
        ("auto", None, "DeepSeek-V4-Flash-0731", "0731"),
        ("original", "PREAMBLE = 'Beyond maximum'", "model", "original"),
        ("0731", None, "model", "0731"),
    ],
)
def test_effort_profile_detection(
    patched_vllm, tmp_path, monkeypatch, setting, encoder_text, name, expected
):
    from vllm.tokenizers.deepseek_v4 import detect_effort_profile

    checkpoint = tmp_path / name
    checkpoint.mkdir()
    if encoder_text is not None:
        (checkpoint / "encoding").mkdir()
        (checkpoint / "encoding" / "encoding_dsv4.py").write_text(encoder_text)
    monkeypatch.setenv("VLLM_DEEPSEEK_V4_EFFORT_PROFILE", setting)

    assert detect_effort_profile(checkpoint) == expected


def test_effort_profile_setting_is_validated(patched_vllm, monkeypatch):
    import vllm.envs as envs

    monkeypatch.setenv("VLLM_DEEPSEEK_V4_EFFORT_PROFILE", "0801")

    with pytest.raises(ValueError, match="0731"):
        envs.VLLM_DEEPSEEK_V4_EFFORT_PROFILE  # noqa: B018


def test_tokenizer_pickles_with_its_profile(patched_vllm, model_path):
    from vllm.tokenizers import get_tokenizer
    from vllm.tokenizers.deepseek_v4 import DeepseekV4Tokenizer

    tokenizer = get_tokenizer(str(model_path), tokenizer_mode="deepseek_v4")
    copy_0731 = pickle.loads(
        pickle.dumps(DeepseekV4Tokenizer(tokenizer.tokenizer, "0731"))
    )

    assert copy_0731.effort_profile == "0731"
    assert copy_0731.encode("<｜User｜>", add_special_tokens=False) == [128803]


def test_tokenizer_mode_is_accepted_by_the_cli(patched_vllm, model_path):
    from tests.harness.server import _use_cpu_platform

    _use_cpu_platform()

    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.tokenizers import cached_tokenizer_from_config
    from vllm.tokenizers.deepseek_v4 import DeepseekV4Tokenizer
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    args = parser.parse_args(
        ["--model", str(model_path), "--tokenizer-mode", "deepseek_v4"]
    )

    config = AsyncEngineArgs.from_cli_args(args).create_model_config()
    tokenizer = cached_tokenizer_from_config(config)

    assert config.tokenizer_mode == "deepseek_v4"
    assert type(tokenizer) is DeepseekV4Tokenizer


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"reasoning_effort": "max"}, {"reasoning_effort": "max"}),
        (
            {"reasoning_effort": "none", "chat_template_kwargs": {"thinking": True}},
            {"thinking": True, "reasoning_effort": "none"},
        ),
        (
            {
                "reasoning_effort": "max",
                "chat_template_kwargs": {"reasoning_effort": "high"},
            },
            {"reasoning_effort": "high"},
        ),
        ({}, None),
    ],
)
def test_request_folds_reasoning_effort_into_kwargs(patched_vllm, body, expected):
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest

    data = {"messages": [{"role": "user", "content": "x"}], **body}
    before = copy.deepcopy(data)

    request = ChatCompletionRequest.model_validate(data)

    assert request.chat_template_kwargs == expected
    assert data == before


def test_request_accepts_dict_arguments_without_touching_them(patched_vllm):
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest

    call = _call("a", "f", {"city": "Zürich", "days": 3})
    data = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ]
    }
    before = copy.deepcopy(data)

    request = ChatCompletionRequest.model_validate(data)

    arguments = list(request.messages[1]["tool_calls"])[0]["function"]["arguments"]
    assert json.loads(arguments) == {"city": "Zürich", "days": 3}
    assert data == before


@pytest.mark.parametrize("effort", ["none", "minimal", "xhigh", "max"])
def test_harmony_refuses_efforts_it_has_no_level_for(patched_vllm, effort):
    from vllm.entrypoints.openai.parser.harmony_utils import get_system_message

    get_system_message(reasoning_effort="low", start_date="2026-01-01")
    with pytest.raises(ValueError, match=f"'{effort}' is not supported"):
        get_system_message(reasoning_effort=effort, start_date="2026-01-01")


# Request JSON can carry any value under the keys the encoder reads.
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner)
    ),
    max_leaves=6,
)
MESSAGE_VALUES = st.one_of(
    JSON,
    st.sampled_from(["query", "action", "title"]),
    st.just([_call("a", "f", '{"x": 1}'), _call("b", "g", "oops")]),
    st.just([{"type": "function", "function": {"name": "f"}}]),
)
MESSAGES = st.lists(
    st.builds(
        lambda role, extra: {"role": role, **extra},
        st.sampled_from(
            [
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
                "latest_reminder",
                "robot",
            ]
        ),
        st.dictionaries(
            st.sampled_from(
                [
                    "content",
                    "reasoning_content",
                    "tool_calls",
                    "tool_call_id",
                    "tools",
                    "response_format",
                    "task",
                    "wo_eos",
                ]
            ),
            MESSAGE_VALUES,
            max_size=4,
        ),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(
    messages=MESSAGES, mode=st.sampled_from(["chat", "thinking"]), drop=st.booleans()
)
def test_any_message_list_renders_or_raises_value_error(enc, messages, mode, drop):
    # Anything but a ValueError would surface as a 500 instead of a 400.
    before = copy.deepcopy(messages)

    try:
        prompt = enc.encode_messages(messages, thinking_mode=mode, drop_thinking=drop)
    except ValueError:
        prompt = None

    assert prompt is None or prompt.startswith(BOS)
    assert messages == before
