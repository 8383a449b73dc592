"""Replays an ao-* session file through aotel_hooks the way a Claude Agent SDK program would see it:
real `claude_agent_sdk` hook input types and message classes, called through the HookMatchers that
`AotelHooks.hooks()` returns, no model calls. One AotelHooks per run, as `ao-new` then `ao-resume` do.

Usage: hooks_replay.py SESSION.jsonl        (endpoint from AOTEL_OTLP_ENDPOINT)
       hooks_replay.py legacy EVENTS.ndjson  (each line through the send_event drop-in)
Prints one JSON line: what was sent.
"""

import asyncio
import json
import logging
import sys
from pathlib import Path

from claude_agent_sdk import (
    AssistantMessage,
    ResultMessage,
    SystemMessage,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from claude_agent_sdk.types import (
    HookContext,
    PostToolUseFailureHookInput,
    PostToolUseHookInput,
    PreToolUseHookInput,
    StopHookInput,
    UserPromptSubmitHookInput,
)
from opentelemetry.sdk.trace.export import SpanExporter

import aotel_hooks


async def call(hooks, event, data, tool_use_id=None):
    answers = []
    for matcher in hooks[event]:
        for callback in matcher.hooks:
            answers.append(await callback(data, tool_use_id, HookContext(signal=None)))
    assert all(a == {} for a in answers), answers


def runs_of(path):
    runs = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        v = json.loads(line)
        if v.get("type") == "user_message":
            runs.append({"prompt": v["content"], "lines": []})
        else:
            runs[-1]["lines"].append(v)
    return runs


async def replay(path):
    meta_path = Path(path).parent / (Path(path).stem + ".meta.json")
    meta = json.loads(meta_path.read_text())
    session = meta["session_id"]
    base = {"session_id": session, "transcript_path": str(path), "cwd": meta["project_dir"]}
    sent = {"runs": 0, "tools": 0, "messages": 0}
    for n, run in enumerate(runs_of(path), start=1):
        telemetry = aotel_hooks.AotelHooks(agent=meta["agent"], session_name=meta["session_name"], run=n,
                                           schedule_delay_millis=50)
        hooks = telemetry.hooks()
        await call(hooks, "UserPromptSubmit",
                   UserPromptSubmitHookInput(**base, hook_event_name="UserPromptSubmit", prompt=run["prompt"]))
        sent["runs"] += 1
        inputs = {}
        for v in run["lines"]:
            if v.get("subtype") == "init":
                telemetry.on_message(SystemMessage(subtype="init", data=v["data"]))
            elif "model" in v:
                blocks = []
                for b in v["content"]:
                    if "text" in b:
                        blocks.append(TextBlock(text=b["text"]))
                    else:
                        blocks.append(ToolUseBlock(id=b["id"], name=b["name"], input=b["input"]))
                telemetry.on_message(AssistantMessage(content=blocks, model=v["model"],
                                                      parent_tool_use_id=v.get("parent_tool_use_id"),
                                                      session_id=session))
                sent["messages"] += 1
                for b in blocks:
                    if isinstance(b, ToolUseBlock):
                        inputs[b.id] = (b.name, b.input)
                        await call(hooks, "PreToolUse", PreToolUseHookInput(
                            **base, hook_event_name="PreToolUse", tool_name=b.name, tool_input=b.input,
                            tool_use_id=b.id), b.id)
            elif "subtype" in v:
                await call(hooks, "Stop", StopHookInput(**base, hook_event_name="Stop", stop_hook_active=False,
                                                        last_assistant_message=v.get("result")))
                telemetry.on_message(ResultMessage(
                    subtype=v["subtype"], duration_ms=v["duration_ms"], duration_api_ms=v["duration_api_ms"],
                    is_error=v["is_error"], num_turns=v["num_turns"], session_id=v["session_id"],
                    total_cost_usd=v["total_cost_usd"], usage=v["usage"], result=v["result"]))
            else:
                blocks = []
                for r in v["content"]:
                    name, tool_input = inputs[r["tool_use_id"]]
                    if r["is_error"]:
                        await call(hooks, "PostToolUseFailure", PostToolUseFailureHookInput(
                            **base, hook_event_name="PostToolUseFailure", tool_name=name, tool_input=tool_input,
                            tool_use_id=r["tool_use_id"], error=r["content"]), r["tool_use_id"])
                    else:
                        await call(hooks, "PostToolUse", PostToolUseHookInput(
                            **base, hook_event_name="PostToolUse", tool_name=name, tool_input=tool_input,
                            tool_response=r["content"], tool_use_id=r["tool_use_id"]), r["tool_use_id"])
                    sent["tools"] += 1
                    blocks.append(ToolResultBlock(tool_use_id=r["tool_use_id"], content=r["content"],
                                                  is_error=r["is_error"]))
                telemetry.on_message(UserMessage(content=blocks, parent_tool_use_id=v.get("parent_tool_use_id")))
        assert telemetry.flush(10000), "spans exported"
        telemetry.shutdown()
    return sent


class Broken(SpanExporter):
    """An exporter that always fails: the agent must not notice."""

    def __init__(self):
        self.calls = 0

    def export(self, spans):
        self.calls += 1
        raise ConnectionError("collector is down")

    def shutdown(self):
        pass


async def never_breaks_the_agent():
    broken = Broken()
    telemetry = aotel_hooks.AotelHooks(exporter=broken, schedule_delay_millis=10)
    hooks = telemetry.hooks()
    base = {"session_id": "not-a-uuid", "transcript_path": "/nowhere", "cwd": "/"}
    await call(hooks, "UserPromptSubmit", UserPromptSubmitHookInput(**base, hook_event_name="UserPromptSubmit",
                                                                    prompt="hi"))
    # Malformed input (no session_id, no tool_use_id): still no opinion, no exception.
    await call(hooks, "PreToolUse", {"hook_event_name": "PreToolUse"})
    await call(hooks, "PostToolUse", {"tool_use_id": "x"})
    telemetry.on_message(object())
    telemetry.on_message(ResultMessage(subtype="success", duration_ms=1, duration_api_ms=1, is_error=False,
                                       num_turns=1, session_id="not-a-uuid"))
    telemetry.flush(5000)
    telemetry.shutdown()
    assert broken.calls >= 1, "the failing exporter was tried"
    # The legacy drop-in never raises either, even for nonsense.
    assert aotel_hooks.send_event("http://127.0.0.1:8765", {"no": "type"}) is False


def legacy(path):
    sent = 0
    for line in Path(path).read_text().splitlines():
        if line.strip():
            assert aotel_hooks.send_event("http://127.0.0.1:8765", json.loads(line)) is True
            sent += 1
    for bridge in aotel_hooks._bridges.values():
        assert bridge.emitter.flush(10000)
    return {"events": sent}


def main():
    logging.basicConfig(level=logging.ERROR)
    if sys.argv[1] == "legacy":
        print(json.dumps(legacy(sys.argv[2])))
        return
    sent = asyncio.run(replay(sys.argv[1]))
    asyncio.run(never_breaks_the_agent())
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
