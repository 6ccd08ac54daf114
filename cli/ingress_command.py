"""``aiorouter ingress``: the HTTP ingress under uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

from cli.argument_types import PORT
from cli.config_option import add_config_option, require_tested_libraries, settings_from_args
from cli.failures import CommandFailed
from cli.gc_tuning import tune_collector
from cli.logging_setup import configure_logging
from cli.tracing_setup import tracer_provider
from shared.errors import ConfigError


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "ingress",
        help="run the HTTP ingress",
        description="Run the OpenAI-compatible HTTP ingress under uvicorn.",
    )
    parser.add_argument("--host", help="address to bind (default: settings.host)")
    parser.add_argument("--port", type=PORT, help="port to bind (default: settings.port)")
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    require_tested_libraries("redis", "rq")
    configure_logging(settings)
    provider = tracer_provider(settings, "aiorouter-ingress")
    # Imported on use: `aiorouter keys` should not pay for loading the web stack.
    from ingress import server

    tracer = None
    if provider is not None:
        from ingress.tracing import RequestTracer

        tracer = RequestTracer(provider.get_tracer("aiorouter.ingress"))
    tune_collector(settings.gc_young_threshold)
    try:
        server.run(
            settings,
            host=args.host if args.host is not None else settings.host,
            port=args.port if args.port is not None else settings.port,
            own_logging=False,
            tracer=tracer,
        )
    except ConfigError as exc:
        raise CommandFailed(f"bad settings: {exc.message}") from exc
    finally:
        if provider is not None:
            provider.shutdown()  # sends the spans still batched
    return 0
