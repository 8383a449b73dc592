"""Sends one agent-shaped session through the Python OpenTelemetry SDK's OTLP exporters.

Usage: send_otlp.py {grpc|http} ENDPOINT SESSION_KEY
Prints the trace id (hex) on stdout once the exporters have flushed.
"""
import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode


def exporters(transport, endpoint):
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True), OTLPLogExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")


def main():
    transport, endpoint, session = sys.argv[1:4]
    resource = Resource.create({"service.name": "ao-python", "host.name": "ci"})
    span_exporter, log_exporter = exporters(transport, endpoint)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    log = logging.getLogger("agent")
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

    tracer = tracer_provider.get_tracer("ao-python-test", "1.2.3")
    common = {"gen_ai.conversation.id": session}
    with tracer.start_as_current_span(
        "invoke_agent planner",
        attributes={
            **common,
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "planner",
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": 70,
            "ao.cost.usd": 0.125,
        },
    ) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span(
            "execute_tool Grep",
            attributes={
                **common,
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "Grep",
                "gen_ai.tool.call.arguments": '{"pattern": "TODO"}',
                "gen_ai.tool.call.result": "src/main.rs:1: // TODO",
                "lines": [1, 2, 3],
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool Write", attributes={**common, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "Write"}
        ) as failed:
            failed.set_status(Status(StatusCode.ERROR, "permission denied"))
        log.info("tool done", extra={"session.id": session, "tool": "Grep"})

    tracer_provider.force_flush()
    logger_provider.force_flush()
    tracer_provider.shutdown()
    logger_provider.shutdown()
    print(trace_id)


if __name__ == "__main__":
    main()
