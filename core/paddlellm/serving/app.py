"""The OpenAI-compatible HTTP layer (starlette): routes, validation, SSE streaming, errors.

HTTP layer -> engine client (:class:`AsyncEngine`, one engine thread) -> ``LLMEngine.step()``.
Every error is answered in OpenAI's shape ``{"error": {"message","type","param","code"}}``.
A client's mistake is a 4xx naming the field or the limit (:mod:`.limits`); a request that
can never be admitted is a 400, and 503 + ``Retry-After`` means only "busy now". A bug in a
handler is logged and answered with a generic 500 (no exception text leaves the server) and
the server keeps serving. Parsing, template rendering and tokenization run in a worker pool
(:mod:`.prepare`), so the event loop keeps answering while a large request is prepared.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..engine.sampling import SamplingParams
from ..errors import ConfigError
from .async_engine import AsyncEngine, EngineDeadError, NeverAdmittedError, QueueFullError
from .limits import ServerLimits
from .metrics import CONTENT_TYPE, ServerMetrics
from .prepare import (Worker, chat_prompt_ids, completion_prompt_ids, decode_request, read_body,
                      too_many_chars)
from .protocol import (APIError, ChatCompletionRequest, CompletionRequest, TokenizeRequest,
                       error_body, unsupported_fields)
from .paddlenlp_compat import (COMPAT_MODEL_NAMES, ChatBody, ServingToolRequest, tool_chunk,
                               tool_result)
from .responses import ChoiceState, OpenAIFormatter
from .streams import ClientDisconnected, Fanout, cancel_on_disconnect

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
RETRY_AFTER_S = 1
INTERNAL_ERROR = "Internal server error; it was logged on the server."


class ServerState:
    """What the handlers share: engine client, tokenizer, names (the base's and the served
    adapters'), key, metrics."""

    def __init__(self, engine: AsyncEngine, *, model_name: str, aliases: tuple[str, ...] = (),
                 api_key: str | None = None, limits: ServerLimits | None = None,
                 root: str | None = None):
        self.engine = engine
        self.tokenizer = engine.engine.tokenizer
        self.model_name = model_name
        self.root = root or model_name
        self.model_names = {model_name, *aliases, *COMPAT_MODEL_NAMES}  # PaddleNLP's names
        served = getattr(engine.engine, "adapters", None)  # --lora_modules
        #: adapter name -> its folder, in the order they were given
        self.adapters: dict[str, str] = dict(zip(served.names, served.paths)) if served else {}
        clash = sorted(self.model_names & set(self.adapters))
        if clash:
            raise ConfigError(f"--lora_modules: adapter name '{clash[0]}' is a name of the base "
                              f"model ({', '.join(sorted(self.model_names))}); choose another")
        self.max_model_len = int(engine.engine.max_model_len)
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.limits = limits or ServerLimits()
        self.max_prompt_chars = self.limits.max_prompt_chars(self.max_model_len)
        self.worker = Worker(self.limits.prep_threads)
        stats = engine.stats()
        block_size = stats.get("block_size") or getattr(engine.engine, "block_size", None)
        blocks = stats.get("kv_blocks_total")
        self.block_size = int(block_size) if block_size else None
        self.num_blocks = int(blocks) if blocks else None
        self.metrics = ServerMetrics(model_name)
        self.created = int(time.time())
        self.formatter = OpenAIFormatter(self.tokenizer, model_name)
        self.formatters = {name: OpenAIFormatter(self.tokenizer, name) for name in self.adapters}

    def formatter_for(self, adapter: str | None) -> OpenAIFormatter:
        """Responses name the model they ran on: the adapter's name, else the base's."""
        return self.formatter if adapter is None else self.formatters[adapter]


# ---------------------------------------------------------------------------- helpers
class _ErrorResponse(JSONResponse):
    """JSON that is always ASCII (whatever a message quotes, it encodes)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _json_error(exc: APIError) -> JSONResponse:
    return _ErrorResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _authorize(state: ServerState, request: Request) -> None:
    if state.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # headers arrive as latin-1 text: compare the raw bytes, in constant time
    given = token.strip().encode("latin-1", "replace")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, state.api_key):
        raise APIError(401, "Incorrect API key provided: pass it as 'Authorization: Bearer <key>'",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _check_model(state: ServerState, model: str | None) -> str | None:
    """The served adapter a request's ``model`` names (None: the base model); a 404 naming
    the model when it is neither the base nor an adapter."""
    if model is None or model in state.model_names:
        return None
    if model in state.adapters:
        return model
    served = ", ".join([state.model_name, *state.adapters])
    raise APIError(404, f"The model `{model}` does not exist. Served: {served}",
                   param="model", code="model_not_found")


def _budget(state: ServerState, prompt_len: int, max_tokens: int | None) -> int:
    """``max_tokens`` checked against the context length (default: what is left) and against
    what the KV cache can hold at all."""
    limit = state.max_model_len
    if prompt_len == 0:
        raise APIError(400, "The prompt is empty.", param="prompt")
    capacity = (state.num_blocks * state.block_size
                if state.num_blocks and state.block_size else None)
    if capacity is not None and capacity < limit:
        wanted = prompt_len + (max_tokens if max_tokens is not None else 1)
        if wanted > capacity:
            raise APIError(400, f"This server's KV cache holds {capacity} tokens per sequence "
                                f"(--num_blocks {state.num_blocks} x --block_size "
                                f"{state.block_size}). However, you requested {wanted} tokens "
                                f"({prompt_len} in the prompt). Please reduce the length of the "
                                f"prompt or the completion.",
                           param="max_tokens" if max_tokens is not None else "prompt",
                           code="context_length_exceeded")
        if max_tokens is None:
            return capacity - prompt_len
    if max_tokens is None:
        if prompt_len >= limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, "
                                f"your prompt has {prompt_len} tokens.", param="messages",
                           code="context_length_exceeded")
        return limit - prompt_len
    if prompt_len + max_tokens > limit:
        raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you "
                            f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the "
                            f"prompt, {max_tokens} for the completion). Please reduce the length "
                            f"of the prompt or the completion.", param="max_tokens",
                       code="context_length_exceeded")
    return max_tokens


def _sampling_params(state: ServerState, req, max_tokens: int, seed: int | None,
                     logprobs: int | None):
    seed = None if seed is None else seed % 2**64  # OpenAI seeds may be negative
    return SamplingParams(
        max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
        top_k=max(req.top_k, 0), repetition_penalty=req.repetition_penalty, seed=seed,
        stop=list(req.stop or []), stop_token_ids=list(req.stop_token_ids or []), ignore_eos=req.ignore_eos,
        logprobs=logprobs)


def _admissible(state: ServerState, count: int, param: str) -> None:
    """400 for a request that needs more engine slots than the server ever has."""
    limit = state.engine.max_in_flight
    if count > limit:
        raise APIError(400, f"This request needs {count} sequences (prompts x n) but this server "
                            f"runs at most {limit} sequences at once (--max_num_seqs + "
                            f"--max_queue); split it.", param=param, code="too_many_sequences")


# ---------------------------------------------------------------------------- generation
async def _start(state: ServerState, prompts: list[list[int]], params: list[Any],
                 adapter: str | None = None) -> Fanout:
    """One engine request per (prompt, params), admitted whole (or 503) and accepted by the
    engine before the response starts, so its errors get a status code. The returned
    fanout carries the request's :class:`RequestTimer` (``fanout.timer``)."""
    timer = state.metrics.timer()
    try:
        state.engine.reserve(len(params))
    except Exception as exc:
        raise _engine_error(exc) from None
    prefix = uuid.uuid4().hex[:12]
    results = await asyncio.gather(
        *(state.engine.submit(f"{prefix}-{i}", ids, p, adapter=adapter)
          for i, (ids, p) in enumerate(zip(prompts, params))),
        return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for r in results:
            if not isinstance(r, BaseException):
                r.close()
        raise _engine_error(errors[0])
    timer.admitted()
    fanout = Fanout(results)
    fanout.timer = timer
    return fanout


def _engine_error(exc: Exception) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, NeverAdmittedError):
        return APIError(400, f"{exc} (--max_num_seqs + --max_queue); split the request.",
                        param="n", code="too_many_sequences")
    if isinstance(exc, QueueFullError):
        return APIError(503, f"The server is busy ({exc}); retry later.", type="server_error",
                        code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, ValueError):  # the engine's validation (e.g. too long): our own words
        return APIError(400, str(exc))
    if isinstance(exc, EngineDeadError):
        logger.error("request refused: %s", exc)
        return APIError(503, "The inference engine is not running; see the server log.",
                        type="server_error", code="engine_unavailable")
    if not isinstance(exc, Exception):
        raise exc  # cancellation and the like pass through
    logger.error("generation failed", exc_info=exc)
    return APIError(500, INTERNAL_ERROR, type="server_error")


async def _collect(state: ServerState, fanout: Fanout, choices: list[ChoiceState]) -> None:
    try:
        while (event := await fanout.next()) is not None:
            fanout.timer.output()
            index, out = event
            choices[index].update(out)
    except Exception as exc:
        raise _engine_error(exc) from None
    finally:
        await fanout.aclose()


async def _respond(state: ServerState, request: Request, *, stream: bool,
                   include_usage: bool, prompts: list[list[int]], params: list[Any],
                   choices: list[ChoiceState], kind: str, adapter: str | None = None) -> Response:
    fmt = state.formatter_for(adapter)
    rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    fanout = await _start(state, prompts, params, adapter)
    if not stream:
        try:
            await cancel_on_disconnect(request.receive, _collect(state, fanout, choices))
        finally:
            await fanout.aclose()
        _count_tokens(state, choices, fanout)
        return JSONResponse(fmt.full_response(kind, rid, created, choices))

    async def events():
        try:
            for chunk in fmt.opening_chunks(kind, rid, created, choices, include_usage):
                yield _sse(chunk)
            while (event := await fanout.next()) is not None:
                fanout.timer.output()
                index, out = event
                delta = choices[index].update(out)
                if delta is not None:
                    yield _sse(fmt.chunk(kind, rid, created, choices[index], delta, include_usage))
            if include_usage:
                yield _sse(fmt.usage_chunk(kind, rid, created, choices))
        except Exception as exc:  # after the headers: report in the stream
            yield _sse(_engine_error(exc).body())
        finally:
            _count_tokens(state, choices, fanout)
            await fanout.aclose()  # aborts what is unfinished (client gone)
        yield "data: [DONE]\n\n"

    # the background task also aborts when the client left before the first event was read
    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                             background=BackgroundTask(fanout.aclose))


def _count_tokens(state: ServerState, choices: list[ChoiceState], fanout: Fanout) -> None:
    fanout.timer.finish()
    usage = state.formatter.usage(choices)
    state.metrics.count_tokens(prompt=usage["prompt_tokens"], generated=usage["completion_tokens"])


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


# ---------------------------------------------------------------------------- routes
async def _parse_request(request: Request, request_cls):
    """``(server state, the validated request body, the adapter its model names or None)``;
    a bad body, an unknown model or an unsupported field is an OpenAI-shaped error. Parsing
    runs in the worker pool."""
    state: ServerState = request.app.state.server
    raw = await read_body(request, state.limits)
    req = await state.worker.run(decode_request, raw, request_cls, state.limits,
                                 state.max_model_len, state.engine.max_in_flight)
    adapter = _check_model(state, getattr(req, "model", None))
    if not isinstance(req, ServingToolRequest):  # its own checks: check_supported()
        unsupported_fields(req)
    return state, req, adapter


async def chat_completions(request: Request) -> Response:
    # OpenAI's body, PaddleNLP's flask body (folded in) or its serving tool's body
    state, req, adapter = await _parse_request(request, ChatBody)
    if isinstance(req, ServingToolRequest):
        return await _serving_tool(state, request, req)
    if req.top_logprobs and not req.logprobs:
        raise APIError(400, "top_logprobs requires logprobs=true", param="top_logprobs")
    _admissible(state, req.n, "n")
    ids = await _chat_ids(state, req)
    max_tokens = _budget(state, len(ids), req.max_new_tokens())
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params = [_sampling_params(state, req, max_tokens,
                               None if req.seed is None else req.seed + i, logprobs)
              for i in range(req.n)]
    choices = [ChoiceState(index=i, prompt_index=0, logprobs=logprobs) for i in range(req.n)]
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return await _respond(state, request, stream=req.stream,
                          include_usage=include_usage, prompts=[ids] * req.n, params=params,
                          choices=choices, kind="chat", adapter=adapter)


async def _chat_ids(state: ServerState, req: ChatCompletionRequest) -> list[int]:
    chars = sum(len(m.text()) + len(m.name or "") for m in req.messages)
    if chars > state.max_prompt_chars:
        raise too_many_chars(chars, state.max_prompt_chars, state.max_model_len, "messages")
    ids = await state.worker.run(chat_prompt_ids, state.tokenizer, req, state.limits,
                                 state.max_model_len, state.model_name)
    return ids[-req.src_length:] if req.src_length else ids


async def _serving_tool(state: ServerState, request: Request, tool: ServingToolRequest) -> Response:
    """PaddleNLP's serving-tool protocol: ``{"result", ...}`` or JSON lines of tokens."""
    tool.check_supported()
    req = tool.chat_request()
    _admissible(state, 1, "text")
    ids = await _chat_ids(state, req)
    params = [_sampling_params(state, req, _budget(state, len(ids), req.max_new_tokens()),
                               None, None)]
    choice = ChoiceState(index=0)
    rid = str(tool.req_id) if tool.req_id is not None else uuid.uuid4().hex
    fanout = await _start(state, [ids], params)

    def usage() -> dict | None:
        return state.formatter.usage([choice]) if tool.return_usage else None

    if not tool.stream:
        try:
            await cancel_on_disconnect(request.receive, _collect(state, fanout, [choice]))
        finally:
            await fanout.aclose()
        _count_tokens(state, [choice], fanout)
        return JSONResponse(tool_result(rid, choice.text, choice.token_ids, usage()))

    async def lines():
        sent = 0
        try:
            while (event := await fanout.next()) is not None:
                fanout.timer.output()
                delta = choice.update(event[1])
                if delta is not None and (delta["text"] or choice.finish_reason):
                    end = choice.finish_reason is not None
                    yield json.dumps(tool_chunk(rid, delta["text"], sent, end,
                                                usage() if end else None),
                                     ensure_ascii=False) + "\n"
                    sent += 1
        except Exception as exc:  # after the headers: report in the stream
            err = _engine_error(exc)
            yield json.dumps({"req_id": rid, "error_msg": err.message,
                              "error_code": err.status}) + "\n"
        finally:
            _count_tokens(state, [choice], fanout)
            await fanout.aclose()

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                             background=BackgroundTask(fanout.aclose))


async def completions(request: Request) -> Response:
    state, req, adapter = await _parse_request(request, CompletionRequest)
    if req.suffix:
        raise APIError(400, "suffix is not supported", param="suffix", code="unsupported_parameter")
    if req.max_tokens == 0 and not req.echo:
        raise APIError(400, "max_tokens 0 needs echo=true (the prompt is all it returns)",
                       param="max_tokens")
    raw_prompts = req.prompts()
    _admissible(state, len(raw_prompts) * req.n, "prompt" if len(raw_prompts) > 1 else "n")
    for prompt in raw_prompts:
        if len(prompt) > (state.max_prompt_chars if isinstance(prompt, str) else state.max_model_len):
            if isinstance(prompt, str):
                raise too_many_chars(len(prompt), state.max_prompt_chars, state.max_model_len, "prompt")
            raise APIError(400, f"This model's maximum context length is {state.max_model_len} "
                                f"tokens. However, your prompt has {len(prompt)} tokens.",
                           param="prompt", code="context_length_exceeded")
    all_ids = await state.worker.run(completion_prompt_ids, state.tokenizer, raw_prompts)
    budgets = [_budget(state, len(ids), req.max_tokens) for ids in all_ids]
    echoes = (await state.worker.run(_echo_texts, state.tokenizer, raw_prompts, all_ids)
              if req.echo else [""] * len(all_ids))
    # echo with logprobs: the prompt tokens' logprobs, one forward per prompt on the engine thread
    scored = (await _score_prompts(state, all_ids, req.logprobs, adapter)
              if req.echo and req.logprobs is not None else [None] * len(all_ids))
    prompts, params, choices = [], [], []
    for p_index, (ids, max_tokens) in enumerate(zip(all_ids, budgets)):
        for j in range(req.n):
            seed = None if req.seed is None else req.seed + j
            if max_tokens:  # 0: the prompt only, nothing for the engine to generate
                prompts.append(ids)
                params.append(_sampling_params(state, req, max_tokens, seed, req.logprobs))
            choices.append(ChoiceState(index=len(choices), prompt_index=p_index,
                                       logprobs=req.logprobs, echo=echoes[p_index],
                                       prompt_logprobs=scored[p_index],
                                       num_prompt_tokens=len(ids)))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    if req.max_tokens == 0:
        return _prompt_only(state, stream=req.stream, include_usage=include_usage,
                            choices=choices, adapter=adapter)
    return await _respond(state, request, stream=req.stream,
                          include_usage=include_usage, prompts=prompts, params=params,
                          choices=choices, kind="completion", adapter=adapter)


def _echo_texts(tokenizer: Any, raw_prompts: list, all_ids: list[list[int]]) -> list[str]:
    """What ``echo`` prepends: the prompt as sent, or the decoded ids (worker pool)."""
    return [p if isinstance(p, str) else tokenizer.decode(ids) for p, ids in zip(raw_prompts, all_ids)]


async def _score_prompts(state: ServerState, all_ids: list[list[int]], top: int,
                         adapter: str | None = None) -> list[list]:
    """Each prompt's token logprobs from the engine thread (an engine error is a 400/500)."""
    try:
        if adapter is None:
            return await state.engine.score_prompts(all_ids, top)
        return await state.engine.score_prompts(all_ids, top, adapter=adapter)
    except ValueError as exc:  # e.g. a token id outside the vocabulary
        raise APIError(400, str(exc), param="prompt") from exc


def _prompt_only(state: ServerState, *, stream: bool, include_usage: bool,
                 choices: list[ChoiceState], adapter: str | None = None) -> Response:
    """``max_tokens: 0`` with ``echo``: each choice is its prompt (and its logprobs), nothing is
    generated, ``finish_reason`` "length" (vLLM's answer)."""
    fmt = state.formatter_for(adapter)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    for c in choices:
        c.finish_reason = "length"
    usage = fmt.usage(choices)
    state.metrics.count_tokens(prompt=usage["prompt_tokens"], generated=0)
    body = fmt.full_response("completion", rid, created, choices)
    if not stream:
        return JSONResponse(body)

    def events():
        for choice in body["choices"]:
            yield _sse(fmt.choice_chunk("completion", rid, created, choice, include_usage))
        if include_usage:
            yield _sse(fmt.usage_chunk("completion", rid, created, choices))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def list_models(request: Request) -> Response:
    """The base model, then each served adapter (``parent``: the base, as vLLM lists them)."""
    state: ServerState = request.app.state.server
    return JSONResponse({"object": "list", "data": [_model_card(state, None)] + [
        _model_card(state, name) for name in state.adapters]})


async def get_model(request: Request) -> Response:
    state: ServerState = request.app.state.server
    adapter = _check_model(state, request.path_params["model"])
    return JSONResponse(_model_card(state, adapter))


def _model_card(state: ServerState, adapter: str | None) -> dict:
    """vLLM's card: ``root`` is the weights' folder, ``parent`` the base of an adapter."""
    if adapter is None:
        name, root, parent = state.model_name, state.root, None
    else:
        name, root, parent = adapter, state.adapters[adapter], state.model_name
    return {"id": name, "object": "model", "created": state.created, "owned_by": "paddlellm",
            "root": root, "parent": parent, "max_model_len": state.max_model_len}


async def tokenize(request: Request) -> Response:
    """The prompt ids of ``messages`` (chat template, as chat completions render them) or
    ``prompt``, with ``max_model_len``: what a client needs to fit a conversation into the
    context (the chat page trims old turns with it, as ``llm chat`` does)."""
    state: ServerState = request.app.state.server
    raw = await read_body(request, state.limits)
    req = await state.worker.run(decode_request, raw, TokenizeRequest, state.limits,
                                 state.max_model_len, state.engine.max_in_flight)
    _check_model(state, req.model)
    if req.messages is not None:
        chars = sum(len(m.text()) + len(m.name or "") for m in req.messages)
        if chars > state.max_prompt_chars:
            raise too_many_chars(chars, state.max_prompt_chars, state.max_model_len, "messages")
        ids = await state.worker.run(chat_prompt_ids, state.tokenizer, req, state.limits,
                                     state.max_model_len, state.model_name)
    elif req.prompt is not None:
        if isinstance(req.prompt, str) and len(req.prompt) > state.max_prompt_chars:
            raise too_many_chars(len(req.prompt), state.max_prompt_chars, state.max_model_len,
                                 "prompt")
        ids = (await state.worker.run(completion_prompt_ids, state.tokenizer, [req.prompt]))[0]
    else:
        raise APIError(400, "Give messages (chat) or prompt (completion) to tokenize",
                       param="messages")
    return JSONResponse({"count": len(ids), "max_model_len": state.max_model_len,
                         "tokens": ids})


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    if not state.engine.is_running:
        return JSONResponse({"status": "error", "error": "the inference engine is not running; "
                                                         "see the server log"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return Response(state.metrics.render(state.engine.stats()), media_type=CONTENT_TYPE)


async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def favicon(request: Request) -> Response:
    """The page's icon (browsers ask for /favicon.ico whatever the page says)."""
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})


def _endpoint(handler, route: str, protected: bool):
    """Wrap a handler: API key, OpenAI-shaped errors, request counting."""

    async def wrapped(request: Request) -> Response:
        state: ServerState = request.app.state.server
        try:
            if protected:
                _authorize(state, request)
            response = await handler(request)
        except APIError as exc:
            response = _json_error(exc)
        except ClientDisconnected:
            state.metrics.count_request(route, 499)
            return Response(status_code=499)
        except Exception:  # a bug: log it, answer in the error shape, keep serving
            logger.exception("unhandled error on %s", request.url.path)
            response = _json_error(APIError(500, INTERNAL_ERROR, type="server_error"))
        state.metrics.count_request(route, response.status_code)
        return response

    return wrapped


async def _http_error(request: Request, exc: HTTPException) -> Response:
    messages = {404: f"Not found: {request.method} {request.url.path}",
                405: f"Method {request.method} not allowed on {request.url.path}"}
    message = messages.get(exc.status_code, str(exc.detail))
    return _ErrorResponse(error_body(message, code=str(exc.status_code)),
                          status_code=exc.status_code, headers=getattr(exc, "headers", None))


def build_app(engine: AsyncEngine, *, model_name: str, aliases: tuple[str, ...] = (),
              api_key: str | None = None, limits: ServerLimits | None = None,
              root: str | None = None) -> Starlette:
    """The starlette app; its lifespan starts and stops the engine thread. ``limits``:
    the request bounds (default: :meth:`ServerLimits.from_env`); ``root``: the model's
    folder, shown in ``/v1/models``. The engine's served adapters (``--lora_modules``) are
    listed beside the base and chosen by a request's ``model``."""
    state = ServerState(engine, model_name=model_name, aliases=aliases, api_key=api_key,
                        limits=limits if limits is not None else ServerLimits.from_env(),
                        root=root)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    routes = [
        Route("/v1/chat/completions", _endpoint(chat_completions, "/v1/chat/completions", True),
              methods=["POST"]),
        Route("/v1/completions", _endpoint(completions, "/v1/completions", True), methods=["POST"]),
        Route("/v1/models", _endpoint(list_models, "/v1/models", True), methods=["GET"]),
        Route("/v1/models/{model:path}", _endpoint(get_model, "/v1/models/{model}", True),
              methods=["GET"]),
        Route("/tokenize", _endpoint(tokenize, "/tokenize", True), methods=["POST"]),
        Route("/health", _endpoint(health, "/health", False), methods=["GET"]),
        Route("/metrics", _endpoint(metrics, "/metrics", False), methods=["GET"]),
        Route("/", _endpoint(index, "/", False), methods=["GET"]),
        Route("/favicon.ico", _endpoint(favicon, "/favicon.ico", False), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error})
    app.state.server = state
    return app
