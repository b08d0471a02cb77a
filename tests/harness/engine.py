"""A scripted engine client for vLLM's real OpenAI server.

Everything in front of the engine is vLLM's own code: the FastAPI app, the chat
serving layer, the tokenizer, the InputProcessor (so its validation runs) and the
OutputProcessor (so detokenization and stop strings run). Only the model is
replaced: each request's completion is taken from a script and replayed token by
token, or in MTP-like steps of two or three tokens.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from vllm.config import VllmConfig
from vllm.engine.protocol import EngineClient
from vllm.outputs import RequestOutput
from vllm.sampling_params import SamplingParams
from vllm.tokenizers import TokenizerLike
from vllm.v1.engine import EngineCoreOutput, EngineCoreRequest, FinishReason
from vllm.v1.engine.input_processor import InputProcessor
from vllm.v1.engine.output_processor import OutputProcessor, RequestOutputCollector
from vllm.v1.engine.parallel_sampling import ParentRequest
from vllm.v1.outputs import LogprobsLists

# Step patterns: how many tokens the engine hands out per step. "mtp" mimics one
# speculative token that is accepted most of the time.
STEP_PATTERNS: dict[str, tuple[int, ...]] = {
    "token": (1,),
    "mtp": (2, 3, 2, 2, 3),
}


@dataclass
class Script:
    """One completion to replay: the text the model writes, and how it is stepped.

    `steps` names a STEP_PATTERNS entry; empty means the server's default.
    """

    text: str | list[str]
    steps: str = ""
    eos: bool = True

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Script:
        return cls(
            text=data["text"],
            steps=data.get("steps", ""),
            eos=data.get("eos", True),
        )


@dataclass
class RecordedRequest:
    """What the serving layer asked the engine for."""

    request_id: str
    prompt_text: str
    structured_outputs: dict[str, Any] | None
    skip_special_tokens: bool
    max_tokens: int | None
    steps: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "prompt_text": self.prompt_text,
            "structured_outputs": self.structured_outputs,
            "skip_special_tokens": self.skip_special_tokens,
            "max_tokens": self.max_tokens,
            "steps": self.steps,
        }


def replace_request(
    request: EngineCoreRequest, request_id: str, params: SamplingParams
) -> EngineCoreRequest:
    child = copy.copy(request)
    child.request_id = request_id
    child.sampling_params = params
    return child


def _structured_outputs_json(params: SamplingParams) -> dict[str, Any] | None:
    so = params.structured_outputs
    if so is None:
        return None
    fields = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
    return {name: getattr(so, name) for name in fields if getattr(so, name, None)}


def scripted_logprobs(token_ids: list[int], num_logprobs: int) -> LogprobsLists:
    """The sampler's logprobs for tokens the script dictates.

    The scripted model is deterministic: the replayed token has probability 1
    (logprob 0.0, rank 1) and every other token probability 0 (logprob -inf,
    which vLLM reports as -9999.0). The alternatives asked for with
    `top_logprobs` are the lowest token ids other than the replayed one.
    """
    num_logprobs = max(num_logprobs, 0)
    ids = np.zeros((len(token_ids), num_logprobs + 1), dtype=np.int64)
    values = np.full((len(token_ids), num_logprobs + 1), -np.inf, dtype=np.float32)
    for row, token_id in enumerate(token_ids):
        others = [t for t in range(num_logprobs + 1) if t != token_id]
        ids[row] = [token_id, *others[:num_logprobs]]
        values[row, 0] = 0.0
    ranks = np.ones(len(token_ids), dtype=np.int64)
    return LogprobsLists(ids, values, ranks)


@dataclass
class ScriptedEngineClient(EngineClient):
    """An EngineClient whose model is a script book.

    `choose` maps the decoded prompt to a Script (the "model"); scripts pushed with
    `push` take precedence, first in, first out.
    """

    vllm_config: VllmConfig
    tokenizer: TokenizerLike
    choose: Callable[[str], Script]
    default_steps: str = "mtp"
    step_delay: float = 0.0
    queue: deque[Script] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    # Scripts taken from the queue so far; see `discard_unplayed`.
    scripts_taken: int = 0

    def __post_init__(self) -> None:
        self.model_config = self.vllm_config.model_config
        self.input_processor = InputProcessor(self.vllm_config, self.tokenizer)
        self.output_processor = OutputProcessor(self.tokenizer, log_stats=False)
        self.io_processor = None

    def push(self, script: Script) -> None:
        self.queue.append(script)

    def discard_unplayed(self, taken_before: int) -> None:
        """Drop the queued script of a request that was refused (a 400) before
        it reached the engine, so that the next request does not play it.

        `taken_before` is `scripts_taken` when the request arrived. Requests are
        sent one at a time by the tests; concurrent ones could be mixed up.
        """
        if self.scripts_taken == taken_before and self.queue:
            self.queue.popleft()

    async def generate(
        self,
        prompt: EngineCoreRequest | Any,
        sampling_params: SamplingParams,
        request_id: str,
        *,
        prompt_text: str | None = None,
        lora_request: Any = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        trace_headers: Mapping[str, str] | None = None,
        priority: int = 0,
        data_parallel_rank: int | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        if isinstance(prompt, EngineCoreRequest):
            request = prompt
        else:
            # The real client validates here too; keep that path identical.
            request = self.input_processor.process_inputs(
                request_id, prompt, sampling_params, None, lora_request,
                tokenization_kwargs, trace_headers, priority, data_parallel_rank,
            )
            prompt_text = prompt.get("prompt") if isinstance(prompt, dict) else None
        params = request.sampling_params
        assert params is not None

        collector = RequestOutputCollector(output_kind=params.output_kind)
        parent, children = self._fan_out(request)
        running = {}
        for index, child in enumerate(children):
            self.output_processor.add_request(child, prompt_text, parent, index,
                                              collector)
            script, steps = self._script_for(child)
            running[child.request_id] = iter(self._steps(child, script, steps))
        logprobs = {c.request_id: c.sampling_params.logprobs for c in children
                    if c.sampling_params is not None}
        try:
            while running:
                self.output_processor.process_outputs(
                    self._next_step(running, logprobs))
                out = collector.get_nowait()
                if out is not None:
                    assert isinstance(out, RequestOutput)
                    yield out
                    if out.finished:
                        return
                await asyncio.sleep(self.step_delay)
        finally:
            self.output_processor.abort_requests([c.request_id for c in children])

    @staticmethod
    def _fan_out(
        request: EngineCoreRequest,
    ) -> tuple[ParentRequest | None, list[EngineCoreRequest]]:
        """One engine request per sample, as AsyncLLM does for n > 1."""
        params = request.sampling_params
        assert params is not None
        if params.n == 1:
            return None, [request]
        parent = ParentRequest(request.request_id, params)
        children = []
        for index in range(params.n):
            child_id, child_params = parent.get_child_info(index)
            children.append(replace_request(request, child_id, child_params))
        return parent, children

    @staticmethod
    def _next_step(running: dict[str, Any],
                   logprobs: Mapping[str, int | None]) -> list[EngineCoreOutput]:
        """One engine step: the next tokens of every unfinished sample."""
        outputs = []
        for request_id, stepper in list(running.items()):
            step_ids, finish, stop_reason = next(stepper)
            num_logprobs = logprobs.get(request_id)
            outputs.append(EngineCoreOutput(
                request_id=request_id,
                new_token_ids=step_ids,
                new_logprobs=(None if num_logprobs is None
                              else scripted_logprobs(step_ids, num_logprobs)),
                finish_reason=finish,
                stop_reason=stop_reason,
            ))
            if finish is not None:
                del running[request_id]
        return outputs

    def _script_for(self, request: EngineCoreRequest) -> tuple[Script, str]:
        """The completion to replay (queued first, else the model's) and its steps;
        records what the serving layer asked for."""
        params = request.sampling_params
        assert params is not None
        decoded_prompt = self.tokenizer.decode(request.prompt_token_ids or [])
        if self.queue:
            script = self.queue.popleft()
            self.scripts_taken += 1
        else:
            script = self.choose(decoded_prompt)
        steps = script.steps or self.default_steps

        self.requests.append(RecordedRequest(
            request_id=request.request_id,
            prompt_text=decoded_prompt,
            structured_outputs=_structured_outputs_json(params),
            skip_special_tokens=params.skip_special_tokens,
            max_tokens=params.max_tokens,
            steps=steps,
        ))
        return script, steps

    def _script_token_ids(self, script: Script) -> list[list[int]]:
        """Token ids of the script, one list per text chunk."""
        chunks = [script.text] if isinstance(script.text, str) else script.text
        encoded = [
            list(self.tokenizer.encode(chunk, add_special_tokens=False))
            for chunk in chunks
        ]
        if script.eos and self.tokenizer.eos_token_id is not None:
            encoded.append([self.tokenizer.eos_token_id])
        return encoded

    def _steps(
        self, request: EngineCoreRequest, script: Script, steps: str
    ) -> Iterable[tuple[list[int], FinishReason | None, int | str | None]]:
        """Group the script's tokens into engine steps and apply the stop rules.

        A chunked script (a list of strings) is replayed one chunk per step, which
        reproduces a delta boundary exactly; otherwise the step pattern decides.
        """
        params = request.sampling_params
        assert params is not None
        chunks = self._script_token_ids(script)
        if isinstance(script.text, str):
            flat = [tid for chunk in chunks for tid in chunk]
            sizes = itertools.cycle(STEP_PATTERNS[steps])
            chunks, start = [], 0
            while start < len(flat):
                end = start + next(sizes)
                chunks.append(flat[start:end])
                start = end

        produced = 0
        max_tokens = params.max_tokens
        for chunk in chunks:
            emitted: list[int] = []
            for tid in chunk:
                emitted.append(tid)
                produced += 1
                finish, stop_reason = self._check_stop(
                    request, params, tid, produced, max_tokens
                )
                if finish is not None:
                    yield emitted, finish, stop_reason
                    return
            yield emitted, None, None
        # A script without EOS that ran out: the engine would go on sampling;
        # report a length stop so every request terminates.
        yield [], FinishReason.LENGTH, None

    @staticmethod
    def _check_stop(
        request: EngineCoreRequest,
        params: SamplingParams,
        token_id: int,
        produced: int,
        max_tokens: int | None,
    ) -> tuple[FinishReason | None, int | None]:
        if produced >= params.min_tokens:
            if not params.ignore_eos and token_id == request.eos_token_id:
                return FinishReason.STOP, None
            if token_id in (params.stop_token_ids or ()):
                return FinishReason.STOP, token_id
        if max_tokens is not None and produced >= max_tokens:
            return FinishReason.LENGTH, None
        return None, None

    # The rest of the EngineClient protocol: a healthy engine with nothing else.

    @property
    def is_running(self) -> bool:
        return True

    @property
    def is_stopped(self) -> bool:
        return False

    @property
    def errored(self) -> bool:
        return False

    @property
    def dead_error(self) -> BaseException:
        return RuntimeError("the scripted engine does not die")

    def encode(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        raise NotImplementedError("the scripted engine only generates")

    async def abort(self, request_id: str | Iterable[str]) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        self.output_processor.abort_requests(ids)

    async def get_tokenizer(self) -> TokenizerLike:
        return self.tokenizer

    async def is_tracing_enabled(self) -> bool:
        return False

    async def do_log_stats(self) -> None:
        return None

    async def check_health(self) -> None:
        return None

    async def start_profile(self) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    async def reset_mm_cache(self) -> None:
        return None

    async def reset_prefix_cache(
        self, reset_running_requests: bool = False, reset_connector: bool = False
    ) -> bool:
        return True

    async def sleep(self, level: int = 1) -> None:
        return None

    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def is_sleeping(self) -> bool:
        return False

    async def add_lora(self, lora_request: Any) -> bool:
        return False

    async def pause_generation(
        self, *, wait_for_inflight_requests: bool = False, clear_cache: bool = True
    ) -> None:
        return None

    async def resume_generation(self) -> None:
        return None

    async def is_paused(self) -> bool:
        return False

    async def get_supported_tasks(self) -> tuple[str, ...]:
        return ("generate",)
