"""Run vLLM's OpenAI server with the scripted engine, on 127.0.0.1 only.

    python -m tests.harness.server --port 8000 [--step-delay S]
        [--default-steps token|mtp] -- <vllm serve args>

The arguments after `--` are parsed by vLLM's own `vllm serve` parser and turned into
the real VllmConfig (speculative config and async scheduling included), so the
server validates requests exactly as the launch line would. The vLLM that runs is
whatever `import vllm` finds: put a patched tree first on PYTHONPATH, or rely on
the editable install.

Two extra routes drive the scripted model:
    POST /harness/script    {"text": str | [str], "steps": "token"|"mtp", "eos": bool}
                            queues the completion for the next request; a list
                            of strings is replayed one string per step;
                            a request refused with an error status drops the
                            script it would have played
    GET  /harness/requests  what the serving layer asked the engine for
"""

import argparse
import asyncio
import os
import sys
from typing import Any

LOOPBACK = "127.0.0.1"


def _use_cpu_platform() -> None:
    # The image build has no device to detect here (VLLM_TARGET_DEVICE=empty);
    # the CPU platform lets VllmConfig resolve. No model is ever loaded.
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    platforms._current_platform = CpuPlatform()


def _parse(argv: list[str]) -> tuple[argparse.Namespace, argparse.Namespace]:
    own = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    own.add_argument("--port", type=int, required=True)
    own.add_argument("--step-delay", type=float, default=0.0)
    own.add_argument("--default-steps", choices=("token", "mtp"), default="mtp")
    if "--" in argv:
        split = argv.index("--")
        own_argv, vllm_argv = argv[:split], argv[split + 1:]
    else:
        own_argv, vllm_argv = argv, []
    ours = own.parse_args(own_argv)

    from vllm.entrypoints.openai.cli_args import (
        make_arg_parser,
        validate_parsed_serve_args,
    )
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    theirs = parser.parse_args(vllm_argv)
    theirs.host, theirs.port = LOOPBACK, ours.port
    validate_parsed_serve_args(theirs)
    return ours, theirs


def _add_control_routes(app: Any, client: Any) -> None:
    from fastapi import Request

    from tests.harness.engine import Script

    @app.post("/harness/script")
    async def push_script(raw: Request) -> dict[str, int]:
        client.push(Script.from_json(await raw.json()))
        return {"queued": len(client.queue)}

    @app.get("/harness/requests")
    async def recorded() -> list[dict[str, Any]]:
        return [r.to_json() for r in client.requests]


def _dropping_refused_scripts(app: Any, client: Any) -> Any:
    """The app, wrapped so that a request refused with an error status (a 400
    before it reached the engine) drops the queued script it would have played.

    A plain ASGI wrapper: vLLM's app is complete by now and takes no middleware.
    """

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await app(scope, receive, send)
            return

        taken = client.scripts_taken
        status: list[int] = []

        async def send_recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await app(scope, receive, send_recording)
        if not status or status[0] >= 400:
            client.discard_unplayed(taken)

    return wrapped


async def serve(ours: argparse.Namespace, args: argparse.Namespace) -> None:
    import uvicorn
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.openai.api_server import (
        build_app,
        init_app_state,
        validate_api_server_args,
    )
    from vllm.reasoning import ReasoningParserManager
    from vllm.tokenizers import cached_tokenizer_from_config
    from vllm.tool_parsers import ToolParserManager

    from tests.harness import model
    from tests.harness.engine import ScriptedEngineClient

    # The same start-up steps as `vllm serve`, minus the engine process.
    if args.tool_parser_plugin:
        ToolParserManager.import_tool_parser(args.tool_parser_plugin)
    if args.reasoning_parser_plugin:
        ReasoningParserManager.import_reasoning_parser(args.reasoning_parser_plugin)
    validate_api_server_args(args)

    vllm_config = AsyncEngineArgs.from_cli_args(args).create_engine_config()
    tokenizer = cached_tokenizer_from_config(vllm_config.model_config)
    client = ScriptedEngineClient(
        vllm_config=vllm_config,
        tokenizer=tokenizer,
        choose=model.choose,
        default_steps=ours.default_steps,
        step_delay=ours.step_delay,
    )

    app = build_app(args)
    await init_app_state(client, app.state, args)
    _add_control_routes(app, client)

    config = uvicorn.Config(_dropping_refused_scripts(app, client), host=LOOPBACK,
                            port=ours.port, log_level="warning")
    await uvicorn.Server(config).serve()


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    _use_cpu_platform()
    ours, theirs = _parse(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(ours, theirs))


if __name__ == "__main__":
    main()
