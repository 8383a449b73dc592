"""aotel_hooks: Claude Agent SDK hooks and a message handler that send agent sessions to aotel as
OpenTelemetry spans, through the standard ``opentelemetry-sdk`` OTLP exporter.

Spans follow aotel's session model and its deterministic ids, so the spans sent live by these hooks and
an ``aotel import`` of the same session's transcript land on the same rows (one copy of each tool call):

* trace id = the session UUID's 16 bytes (SHA-256 of the session id when it is not a UUID);
* span id = the first 8 bytes of SHA-256 over a stable name: ``run:<session>:<n>`` for the n-th run
  (from 1), ``tool:<tool_use_id>``, ``chat:<message id>`` or ``chat:<session>:<n>:<k>`` for the k-th
  assistant message of run n, ``subagent:<tool_use_id of the Task call>``.

Nothing here may block or break the agent: every callback catches and logs its own errors and returns
``{}`` (no opinion), and spans leave through a ``BatchSpanProcessor`` that buffers and exports in the
background.

Usage with the Claude Agent SDK::

    from aotel_hooks import AotelHooks
    telemetry = AotelHooks(agent="local-codebase-researcher", session_name="architect", run=1)
    options = ClaudeAgentOptions(hooks=telemetry.hooks())
    async for message in query(prompt=prompt, options=options):
        telemetry.on_message(message)
    telemetry.shutdown()

``send_event(base_url, event)`` is a drop-in replacement for the old ``observability.py`` function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

__all__ = ["AotelHooks", "send_event", "trace_id_for_session", "span_id_for"]
__version__ = "0.1.0"

logger = logging.getLogger("aotel_hooks")

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"


def trace_id_for_session(session: str) -> int:
    """The session UUID's 16 bytes, else the first 16 bytes of SHA-256 of the session id."""
    hexed = session.replace("-", "")
    if len(hexed) == 32:
        try:
            value = int(hexed, 16)
            if value:
                return value
        except ValueError:
            pass
    return int.from_bytes(hashlib.sha256(session.encode()).digest()[:16], "big")


def span_id_for(name: str) -> int:
    """The first 8 bytes of SHA-256 over a stable name such as ``tool:<tool_use_id>``."""
    digest = bytearray(hashlib.sha256(name.encode()).digest()[:8])
    if not any(digest):
        digest[7] = 1
    return int.from_bytes(bytes(digest), "big")


def _endpoint(explicit: str | None) -> str:
    return (
        explicit
        or os.environ.get("AOTEL_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or DEFAULT_ENDPOINT
    ).rstrip("/")


def _now() -> int:
    return time.time_ns()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for block in value:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        if parts:
            return "\n".join(parts)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


class _FixedIds(IdGenerator):
    """Hands out the ids set for the next span; random ones otherwise."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._random = RandomIdGenerator()

    def set_next(self, trace_id: int, span_id: int) -> None:
        self._local.trace_id = trace_id
        self._local.span_id = span_id

    def generate_span_id(self) -> int:
        value = getattr(self._local, "span_id", None)
        self._local.span_id = None
        return value if value else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        value = getattr(self._local, "trace_id", None)
        self._local.trace_id = None
        return value if value else self._random.generate_trace_id()


def _guarded(method):
    """Never let telemetry break the agent: log and carry on."""

    def sync_wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception:  # noqa: BLE001 - by design
            logger.warning("aotel_hooks: %s failed; the agent is not affected", method.__name__, exc_info=True)
            return {}

    sync_wrapper.__name__ = method.__name__
    sync_wrapper.__doc__ = method.__doc__
    return sync_wrapper


@dataclasses.dataclass
class _Run:
    session: str
    n: int
    start_ns: int
    prompt: str | None = None
    model: str | None = None
    last_ns: int = 0
    assistant_count: int = 0
    ended: bool = False
    output: str | None = None


@dataclasses.dataclass
class _Tool:
    session: str
    name: str
    start_ns: int
    tool_input: Any
    parent_key: str
    done: bool = False


class _Emitter:
    """Builds spans with aotel's ids on a private tracer provider."""

    def __init__(
        self,
        endpoint: str | None,
        service_name: str,
        exporter: SpanExporter | None,
        schedule_delay_millis: float | None,
    ) -> None:
        self._ids = _FixedIds()
        self._lock = threading.Lock()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "ao.ingest": "hooks"}),
            id_generator=self._ids,
            shutdown_on_exit=True,
        )
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=f"{_endpoint(endpoint)}/v1/traces", timeout=5)
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_millis))
        self._tracer = self.provider.get_tracer("aotel_hooks", __version__)

    def emit(
        self,
        session: str,
        key: str,
        parent_key: str | None,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any],
        *,
        error: str | None = None,
        in_progress: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        trace_id = trace_id_for_session(session)
        attrs = {"gen_ai.conversation.id": session}
        attrs.update({k: v for k, v in attributes.items() if v is not None})
        if in_progress:
            attrs["ao.in_progress"] = True
        if parent_key:
            parent = SpanContext(
                trace_id=trace_id,
                span_id=span_id_for(parent_key),
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent), Context())
        else:
            context = Context()
        with self._lock:
            self._ids.set_next(trace_id, span_id_for(key))
            span = self._tracer.start_span(name, context=context, kind=kind, attributes=attrs, start_time=start_ns)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        elif not in_progress:
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=max(end_ns, start_ns))

    def flush(self, timeout_millis: int = 30000) -> bool:
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.provider.shutdown()


class AotelHooks:
    """Hook callbacks (UserPromptSubmit, PreToolUse, PostToolUse, PostToolUseFailure, Stop, SubagentStart,
    SubagentStop) and a message handler for one agent program.

    ``run`` is the number of the first run this object records in its session (1 for ``ao-new``; for
    ``ao-resume``, the number of runs the session file holds including the one starting now); later
    prompts count on from there. ``agent`` and ``session_name`` are what ao-* keeps in its meta file.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        service_name: str = "ao",
        agent: str | None = None,
        session_name: str | None = None,
        run: int | None = None,
        exporter: SpanExporter | None = None,
        schedule_delay_millis: float | None = None,
    ) -> None:
        self._emitter = _Emitter(endpoint, service_name, exporter, schedule_delay_millis)
        self.agent = agent or "agent"
        self.session_name = session_name
        self._first_run = run
        self._runs: dict[str, _Run] = {}
        self._run_counts: dict[str, int] = {}
        self._tools: dict[str, _Tool] = {}
        self._pending_tasks: list[tuple[str, str | None]] = []
        self._agent_tasks: dict[str, str] = {}
        self._subagent_start: dict[str, int] = {}
        self._task_types: dict[str, str] = {}
        self._session: str | None = None
        self._lock = threading.RLock()

    # -- wiring -------------------------------------------------------------------------------------

    def hooks(self) -> dict[str, list[Any]]:
        """``ClaudeAgentOptions(hooks=...)`` for every event these callbacks handle."""
        from claude_agent_sdk import HookMatcher

        return {
            "UserPromptSubmit": [HookMatcher(hooks=[self.user_prompt_submit])],
            "PreToolUse": [HookMatcher(hooks=[self.pre_tool_use])],
            "PostToolUse": [HookMatcher(hooks=[self.post_tool_use])],
            "PostToolUseFailure": [HookMatcher(hooks=[self.post_tool_use_failure])],
            "Stop": [HookMatcher(hooks=[self.stop])],
            "SubagentStart": [HookMatcher(hooks=[self.subagent_start])],
            "SubagentStop": [HookMatcher(hooks=[self.subagent_stop])],
        }

    def flush(self, timeout_millis: int = 30000) -> bool:
        """Exports what is buffered; returns whether it finished in time."""
        try:
            return self._emitter.flush(timeout_millis)
        except Exception:  # noqa: BLE001
            logger.warning("aotel_hooks: flush failed", exc_info=True)
            return False

    def shutdown(self) -> None:
        """Exports what is buffered and stops the exporter (also done at interpreter exit)."""
        try:
            self._emitter.shutdown()
        except Exception:  # noqa: BLE001
            logger.warning("aotel_hooks: shutdown failed", exc_info=True)

    # -- hook callbacks (async, as the SDK calls them) ----------------------------------------------

    async def user_prompt_submit(self, input_data: dict, tool_use_id: str | None, context: Any) -> dict:
        return self._user_prompt(input_data)

    async def pre_tool_use(self, input_data: dict, tool_use_id: str | None, context: Any) -> dict:
        return self._pre_tool(input_data, tool_use_id)

    async def post_tool_use(self, input_data: dict, tool_use_id: str | None, context: Any) -> dict:
        return self._post_tool(input_data, tool_use_id, None)

    async def post_tool_use_failure(self, input_data: dict, tool_use_id: str | None, context: Any) -> dict:
        return self._post_tool(input_data, tool_use_id, input_data.get("error") or "tool failed")

    async def stop(self, input_data: dict, tool_use_id: str | None, context: Any) -> dict:
        return self._stop(input_data)

    async def subagent_start(self, input_data: dict, tool_use_id: str | None, context: Any) -> dict:
        return self._subagent_start_hook(input_data)

    async def subagent_stop(self, input_data: dict, tool_use_id: str | None, context: Any) -> dict:
        return self._subagent_stop_hook(input_data)

    # -- the work ------------------------------------------------------------------------------------

    def _start_run(self, session: str, prompt: str | None, at: int) -> _Run:
        count = self._run_counts.get(session)
        n = (self._first_run or 1) if count is None else count + 1
        self._run_counts[session] = n
        run = _Run(session=session, n=n, start_ns=at, prompt=prompt, last_ns=at)
        self._runs[session] = run
        self._session = session
        self._emit_run(run, in_progress=True)
        return run

    def _run_for(self, session: str | None) -> _Run | None:
        session = session or self._session
        if session is None:
            return None
        run = self._runs.get(session)
        if run is None:
            run = self._start_run(session, None, _now())
        return run

    def _emit_run(self, run: _Run, *, in_progress: bool, end_ns: int | None = None, extra: dict | None = None,
                  error: str | None = None) -> None:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.agent,
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": run.model,
            "ao.session.name": self.session_name,
            "ao.run.index": run.n,
            "gen_ai.input.messages": _messages("user", run.prompt) if run.prompt is not None else None,
            "gen_ai.output.messages": _messages("assistant", run.output) if run.output else None,
        }
        attrs.update(extra or {})
        end = run.start_ns if in_progress else (end_ns or _now())
        self._emitter.emit(
            run.session,
            f"run:{run.session}:{run.n}",
            None,
            f"invoke_agent {self.agent}",
            run.start_ns,
            end,
            attrs,
            error=error,
            in_progress=in_progress,
        )

    @_guarded
    def _user_prompt(self, data: dict) -> dict:
        with self._lock:
            self._start_run(data["session_id"], data.get("prompt"), _now())
        return {}

    def _scope_for(self, run: _Run, agent_id: str | None) -> str:
        if agent_id:
            task = self._agent_tasks.get(agent_id) or self._claim_task(agent_id, None)
            if task:
                return f"subagent:{task}"
        return f"run:{run.session}:{run.n}"

    def _claim_task(self, agent_id: str, agent_type: str | None) -> str | None:
        """Matches a sub-agent to the oldest unclaimed Task call of its type (else the oldest)."""
        if agent_id in self._agent_tasks:
            return self._agent_tasks[agent_id]
        pick = next((t for t in self._pending_tasks if agent_type and t[1] == agent_type), None)
        pick = pick or (self._pending_tasks[0] if self._pending_tasks else None)
        if pick is None:
            return None
        self._pending_tasks.remove(pick)
        self._agent_tasks[agent_id] = pick[0]
        return pick[0]

    def _tool_started(self, session: str, tool_use_id: str, name: str, tool_input: Any, agent_id: str | None,
                      parent_tool: str | None, at: int) -> _Tool | None:
        if tool_use_id in self._tools:
            return None
        run = self._run_for(session)
        if run is None:
            return None
        parent = f"subagent:{parent_tool}" if parent_tool else self._scope_for(run, agent_id)
        tool = _Tool(session=run.session, name=name, start_ns=at, tool_input=tool_input, parent_key=parent)
        self._tools[tool_use_id] = tool
        if name in ("Task", "Agent"):
            subagent_type = tool_input.get("subagent_type") if isinstance(tool_input, dict) else None
            self._pending_tasks.append((tool_use_id, subagent_type))
            if subagent_type:
                self._task_types[tool_use_id] = subagent_type
        return tool

    def _emit_tool(self, tool_use_id: str, tool: _Tool, *, end_ns: int, result: str | None, error: str | None,
                   in_progress: bool) -> None:
        attrs = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool.name,
            "gen_ai.tool.call.id": tool_use_id,
            "gen_ai.tool.call.arguments": json.dumps(tool.tool_input, default=str) if tool.tool_input is not None else None,
            "gen_ai.tool.call.result": result,
            "error.type": "tool_error" if error is not None else None,
        }
        self._emitter.emit(
            tool.session,
            f"tool:{tool_use_id}",
            tool.parent_key,
            f"execute_tool {tool.name}",
            tool.start_ns,
            end_ns,
            attrs,
            error=_first_line(error) if error is not None else None,
            in_progress=in_progress,
        )

    @_guarded
    def _pre_tool(self, data: dict, tool_use_id: str | None) -> dict:
        tool_use_id = data.get("tool_use_id") or tool_use_id
        if not tool_use_id:
            return {}
        with self._lock:
            tool = self._tool_started(
                data["session_id"], tool_use_id, data.get("tool_name", "tool"), data.get("tool_input"),
                data.get("agent_id"), None, _now(),
            )
            if tool is not None:
                self._emit_tool(tool_use_id, tool, end_ns=tool.start_ns, result=None, error=None, in_progress=True)
        return {}

    def _finish_tool(self, session: str | None, tool_use_id: str, name: str | None, tool_input: Any,
                     result: str | None, error: str | None, at: int) -> None:
        tool = self._tools.get(tool_use_id)
        if tool is None:
            run = self._run_for(session)
            if run is None:
                return
            tool = self._tool_started(run.session, tool_use_id, name or "tool", tool_input, None, None, at)
            if tool is None:
                return
        if tool.done:
            return
        tool.done = True
        self._emit_tool(tool_use_id, tool, end_ns=at, result=result, error=error, in_progress=False)

    @_guarded
    def _post_tool(self, data: dict, tool_use_id: str | None, error: str | None) -> dict:
        tool_use_id = data.get("tool_use_id") or tool_use_id
        if not tool_use_id:
            return {}
        result = None if error is not None else _text(data.get("tool_response"))
        with self._lock:
            self._finish_tool(
                data.get("session_id"), tool_use_id, data.get("tool_name"), data.get("tool_input"),
                result if error is None else error, error, _now(),
            )
        return {}

    @_guarded
    def _stop(self, data: dict) -> dict:
        with self._lock:
            run = self._runs.get(data.get("session_id") or self._session or "")
            if run is None or run.ended:
                return {}
            run.output = data.get("last_assistant_message") or run.output
            run.last_ns = _now()
            self._emit_run(run, in_progress=False, end_ns=run.last_ns)
        return {}

    @_guarded
    def _subagent_start_hook(self, data: dict) -> dict:
        with self._lock:
            agent_id = data.get("agent_id")
            if not agent_id:
                return {}
            task = self._claim_task(agent_id, data.get("agent_type"))
            if task is None:
                return {}
            self._subagent_start[task] = _now()
            self._emit_subagent(data["session_id"], task, data.get("agent_type"), in_progress=True)
        return {}

    @_guarded
    def _subagent_stop_hook(self, data: dict) -> dict:
        with self._lock:
            agent_id = data.get("agent_id")
            if not agent_id:
                return {}
            task = self._claim_task(agent_id, data.get("agent_type"))
            if task is None:
                return {}
            self._emit_subagent(data["session_id"], task, data.get("agent_type"), in_progress=False,
                                output=data.get("last_assistant_message"))
        return {}

    def _emit_subagent(self, session: str, task: str, agent_type: str | None, *, in_progress: bool,
                       output: str | None = None) -> None:
        agent = agent_type or self._task_types.get(task) or "subagent"
        tool = self._tools.get(task)
        start = self._subagent_start.get(task) or (tool.start_ns if tool else _now())
        self._emitter.emit(
            session,
            f"subagent:{task}",
            f"tool:{task}",
            f"invoke_agent {agent}",
            start,
            start if in_progress else _now(),
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent,
                "gen_ai.provider.name": "anthropic",
                "gen_ai.output.messages": _messages("assistant", output) if output else None,
            },
            in_progress=in_progress,
        )

    # -- the message handler ------------------------------------------------------------------------

    @_guarded
    def on_message(self, message: Any) -> dict:
        """Call with every message the SDK yields: model turns become chat spans, tool results close tool
        spans the hooks did not, and the result message completes the run with its usage and cost."""
        kind = type(message).__name__
        with self._lock:
            if kind == "SystemMessage":
                data = getattr(message, "data", None) or {}
                if getattr(message, "subtype", None) == "init" and data.get("session_id"):
                    run = self._run_for(data["session_id"])
                    if run is not None and data.get("model"):
                        run.model = data["model"]
            elif kind == "AssistantMessage":
                self._assistant(message)
            elif kind == "UserMessage":
                self._user(message)
            elif kind == "ResultMessage":
                self._result(message)
        return {}

    def _assistant(self, message: Any) -> None:
        run = self._run_for(getattr(message, "session_id", None))
        if run is None:
            return
        now = _now()
        run.assistant_count += 1
        run.model = run.model or getattr(message, "model", None)
        message_id = getattr(message, "message_id", None)
        key = f"chat:{message_id}" if message_id else f"chat:{run.session}:{run.n}:{run.assistant_count}"
        parent_tool = getattr(message, "parent_tool_use_id", None)
        parent = f"subagent:{parent_tool}" if parent_tool else f"run:{run.session}:{run.n}"
        parts = []
        for block in getattr(message, "content", None) or []:
            bkind = type(block).__name__
            if bkind == "TextBlock":
                parts.append({"type": "text", "content": block.text})
            elif bkind in ("ToolUseBlock", "ServerToolUseBlock"):
                parts.append({"type": "tool_call", "id": block.id, "name": block.name, "arguments": block.input})
                self._tool_started(run.session, block.id, block.name, block.input, None, parent_tool, now)
        self._emitter.emit(
            run.session,
            key,
            parent,
            f"chat {getattr(message, 'model', None) or 'claude'}",
            run.last_ns or run.start_ns,
            now,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": getattr(message, "model", None),
                "gen_ai.response.id": message_id,
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": parts}], default=str),
            },
            kind=SpanKind.CLIENT,
        )
        run.last_ns = now

    def _user(self, message: Any) -> None:
        content = getattr(message, "content", None)
        if not isinstance(content, list):
            return
        run = self._run_for(None)
        now = _now()
        for block in content:
            if type(block).__name__ != "ToolResultBlock":
                continue
            text = _text(block.content)
            error = text if block.is_error else None
            self._finish_tool(run.session if run else None, block.tool_use_id, None, None, text, error, now)
        if run is not None:
            run.last_ns = now

    def _result(self, message: Any) -> None:
        run = self._run_for(getattr(message, "session_id", None))
        if run is None:
            return
        usage = getattr(message, "usage", None) or {}
        extra: dict[str, Any] = {
            "ao.cost.usd": getattr(message, "total_cost_usd", None),
            "ao.num_turns": getattr(message, "num_turns", None),
            "ao.duration_api_ms": getattr(message, "duration_api_ms", None),
            "ao.result.subtype": getattr(message, "subtype", None),
        }
        for src, dst in (
            ("input_tokens", "gen_ai.usage.input_tokens"),
            ("output_tokens", "gen_ai.usage.output_tokens"),
            ("cache_read_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
            ("cache_creation_input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
        ):
            if isinstance(usage.get(src), int):
                extra[dst] = usage[src]
        result = getattr(message, "result", None)
        if result:
            run.output = result
        failed = bool(getattr(message, "is_error", False)) or getattr(message, "subtype", "success") != "success"
        end = _now()
        duration = getattr(message, "duration_ms", None)
        if isinstance(duration, int) and duration > 0:
            end = max(end, run.start_ns + duration * 1_000_000)
        if failed:
            extra["error.type"] = getattr(message, "subtype", None)
        self._emit_run(run, in_progress=False, end_ns=end, extra=extra,
                       error=_first_line(result or getattr(message, "subtype", "error")) if failed else None)
        run.ended = True


# -- drop-in replacement for observability.py's send_event ---------------------------------------------

_bridge_lock = threading.Lock()
_bridges: dict[str, "_LegacyBridge"] = {}


def _parse_ts(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value * 1e9)
    if isinstance(value, str):
        from datetime import datetime

        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            pass
    return _now()


class _LegacyBridge:
    """The old events as spans, with the same mapping as aotel's ``POST /events``."""

    def __init__(self, endpoint: str) -> None:
        self.emitter = _Emitter(endpoint, "ao", None, None)
        self.runs: dict[str, tuple[str, int, dict]] = {}
        self.open_tools: dict[tuple[str, str], list[tuple[str, int, Any]]] = {}

    def handle(self, event: dict) -> None:
        kind = event.get("event_type")
        sid = event.get("session_id")
        if not kind or not sid:
            raise ValueError("event_type and session_id are required")
        ts = _parse_ts(event.get("timestamp"))
        run = self.runs.get(sid)
        if kind == "session_start":
            key = f"run:{sid}:legacy:{ts}"
            attrs = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "anthropic",
                "ao.session.name": event.get("session_name"),
            }
            self.runs[sid] = (key, ts, attrs)
            self.emitter.emit(sid, key, None, "invoke_agent", ts, ts, attrs, in_progress=True)
        elif kind == "message" and run is not None:
            role = event.get("role") or "user"
            text = _text(event.get("content"))
            name = "gen_ai.input.messages" if role == "user" else "gen_ai.output.messages"
            if role == "user":
                run[2].setdefault(name, _messages(role, text))
            else:
                run[2][name] = _messages(role, text)
        elif kind == "pre_tool":
            tool = event.get("tool_name") or "tool"
            key = f"tool:{sid}:legacy:{ts}:{tool}"
            self.open_tools.setdefault((sid, tool), []).append((key, ts, event.get("tool_input")))
            self.emitter.emit(sid, key, run[0] if run else None, f"execute_tool {tool}", ts, ts,
                              self._tool_attrs(tool, event.get("tool_input")), in_progress=True)
        elif kind == "post_tool":
            tool = event.get("tool_name") or "tool"
            waiting = self.open_tools.get((sid, tool)) or []
            key, start, _ = waiting.pop(0) if waiting else (f"tool:{sid}:legacy:{ts}:{tool}", ts, None)
            attrs = self._tool_attrs(tool, event.get("tool_input"))
            error = event.get("error")
            output = event.get("tool_output")
            attrs["gen_ai.tool.call.result"] = None if output is None else _text(output)
            if error:
                attrs["error.type"] = "tool_error"
            self.emitter.emit(sid, key, run[0] if run else None, f"execute_tool {tool}", start, ts, attrs,
                              error=str(error) if error else None)
        elif kind == "session_stop":
            if run is None:
                run = (f"run:{sid}:legacy:stop:{ts}", ts, {"gen_ai.operation.name": "invoke_agent"})
            key, start, attrs = run
            attrs = dict(attrs)
            code = event.get("exit_code")
            attrs["ao.exit_code"] = code
            attrs["ao.stop_reason"] = event.get("reason")
            failed = code not in (None, 0)
            self.emitter.emit(sid, key, None, "invoke_agent", start, ts, attrs,
                              error=f"exit code {code}" if failed else None)
            self.runs.pop(sid, None)
            self.emitter.flush(5000)

    @staticmethod
    def _tool_attrs(tool: str, tool_input: Any) -> dict:
        return {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.arguments": json.dumps(tool_input, default=str) if tool_input is not None else None,
        }


def send_event(base_url: str | None, event: dict) -> bool:
    """Drop-in replacement for the old ``observability.py`` ``send_event(base_url, event)``: takes the same
    event dicts (session_start, message, pre_tool, post_tool, session_stop) and sends them to aotel as
    OpenTelemetry spans through a buffering exporter instead of one blocking HTTP POST per event. Spans
    go to ``AOTEL_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` if set, else to port 4318 on
    ``base_url``'s host. Never raises; returns False (and logs) when the event could not be handled."""
    try:
        endpoint = os.environ.get("AOTEL_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint:
            host = urlparse(base_url or "").hostname or "127.0.0.1"
            endpoint = f"http://{host}:4318"
        with _bridge_lock:
            bridge = _bridges.get(endpoint)
            if bridge is None:
                bridge = _bridges[endpoint] = _LegacyBridge(endpoint)
            bridge.handle(event)
        return True
    except Exception:  # noqa: BLE001 - by design
        logger.warning("aotel_hooks.send_event: event not sent", exc_info=True)
        return False
