"""Command line: ``python -m resumable_fast demo [--host 127.0.0.1] [--port 8000]``,
and ``python -m resumable_fast s2 setup [--retention-seconds N]
[--delete-on-empty-seconds N]``, which creates or checks the basin named by
``S2_BASIN`` (see :mod:`resumable_fast.basin_setup`).

The demo's replies come from the simulated LLM, or, with ``OPENAI_BASE_URL``
set, from that OpenAI-compatible endpoint (``--model``, ``OPENAI_API_KEY``):
see :mod:`resumable_fast.demo.model`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from resumable_fast.basin_setup import (
    DEFAULT_DELETE_ON_EMPTY_SECONDS,
    BasinSettings,
    set_up_basin,
)
from resumable_fast.config import S2Config
from resumable_fast.demo.model import (
    DEFAULT_MODEL,
    ModelSource,
    OpenAICompatibleModel,
    default_model_name,
    model_from_env,
)
from resumable_fast.errors import BackendError, ConfigurationError
from resumable_fast.factory import create_resumable_stream_context
from resumable_fast.s2 import S2Client

if TYPE_CHECKING:
    from resumable_fast.demo.metrics import PrometheusMetrics

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEMO_DRAIN_TIMEOUT = 5.0

logger = logging.getLogger("resumable_fast")


async def serve_demo(
    host: str, port: int, tokens_per_second: float, model: ModelSource | None = None
) -> None:
    """Serve the chat demo until SIGINT or SIGTERM, then close the context.

    Replies come from ``model``; by default the simulated LLM."""
    import uvicorn.config

    from resumable_fast.demo.app import create_app, start_server

    metrics = _demo_metrics()
    context = create_resumable_stream_context(
        drain_timeout=DEMO_DRAIN_TIMEOUT,
        meter_provider=metrics.meter_provider if metrics is not None else None,
    )
    async with context:
        app = create_app(
            context,
            backend_name=context.backend_description,
            tokens_per_second=tokens_per_second,
            model=model,
            metrics=metrics,
        )
        server = await start_server(
            app, host=host, port=port, log_config=uvicorn.config.LOGGING_CONFIG
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.request_stop)
        try:
            await server.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    if metrics is not None:
        metrics.shutdown()


def _demo_metrics() -> PrometheusMetrics | None:
    """The demo's metrics, or None (logged) without the SDK and exporter."""
    try:
        from resumable_fast.demo.metrics import PrometheusMetrics
    except ImportError as exc:
        logger.info(
            "resumable_fast demo: no /metrics (%s is missing): pip install 'resumable_fast[demo]'",
            exc.name,
        )
        return None
    return PrometheusMetrics()


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _whole_seconds(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds > 0, got {text}")
    return value


async def _set_up_basin(settings: BasinSettings) -> list[str]:
    config = S2Config.from_options()
    client = S2Client(config)
    try:
        return await set_up_basin(client, config.basin, settings)
    finally:
        await client.aclose()


def _s2_setup(settings: BasinSettings) -> int:
    try:
        changes = asyncio.run(_set_up_basin(settings))
    except ConfigurationError as exc:
        print(
            f"resumable-fast s2 setup: {exc}\n"
            "It reads S2_BASIN, S2_ACCESS_TOKEN and, for s2-lite, S2_ACCOUNT_ENDPOINT and "
            "S2_BASIN_ENDPOINT.",
            file=sys.stderr,
        )
        return 2
    except BackendError as exc:
        print(f"resumable-fast s2 setup: {exc}", file=sys.stderr)
        return 1
    for line in changes or ["basin already set up: nothing changed"]:
        print(line)
    return 0


def _demo_model(model_name: str, tokens_per_second: float) -> ModelSource | None:
    """The demo's model source from the environment, or None after printing why
    it cannot be used."""
    try:
        model = model_from_env(model=model_name, tokens_per_second=tokens_per_second)
    except ValueError as exc:
        print(f"resumable-fast demo: {exc}", file=sys.stderr)
        return None
    if isinstance(model, OpenAICompatibleModel):
        try:
            import openai  # noqa: F401
        except ImportError:
            print(
                "resumable-fast demo: OPENAI_BASE_URL is set, so replies come from that "
                "endpoint through the openai SDK, which is missing: "
                "pip install 'resumable_fast[demo]'",
                file=sys.stderr,
            )
            return None
    return model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resumable-fast")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="serve the chat demo: replies that survive reloads and second tabs"
    )
    demo.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (%(default)s)")
    demo.add_argument(
        "--tokens-per-second",
        type=_positive,
        default=40.0,
        help="pace of the simulated LLM (%(default)s)",
    )
    demo.add_argument(
        "--model",
        default=default_model_name(),
        help="the model to ask when OPENAI_BASE_URL is set: replies then stream from that "
        "OpenAI-compatible endpoint (with OPENAI_API_KEY, if it needs one) instead of "
        f"the simulated LLM (%(default)s; OPENAI_MODEL, when set, replaces {DEFAULT_MODEL} "
        "as the default)",
    )
    s2 = commands.add_parser("s2", help="S2 administration (reads the S2_* variables)")
    s2_commands = s2.add_subparsers(dest="s2_command", required=True)
    setup = s2_commands.add_parser(
        "setup",
        help="create the basin, or check it and change what differs: create-on-append, "
        "create-on-read, delete-on-empty and, if given, a retention policy",
    )
    setup.add_argument(
        "--retention-seconds",
        type=_whole_seconds,
        default=None,
        help="records expire this long after they were appended (default: leave as is)",
    )
    setup.add_argument(
        "--delete-on-empty-seconds",
        type=_whole_seconds,
        default=DEFAULT_DELETE_ON_EMPTY_SECONDS,
        help="delete a stream once it has been empty this long (%(default)s)",
    )
    args = parser.parse_args(argv)
    if args.command == "s2":
        return _s2_setup(
            BasinSettings(
                delete_on_empty_seconds=args.delete_on_empty_seconds,
                retention_seconds=args.retention_seconds,
            )
        )
    if args.command == "demo":
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as exc:
            print(
                f"resumable-fast demo needs the demo extra ({exc.name} is missing): "
                "pip install 'resumable_fast[demo]'",
                file=sys.stderr,
            )
            return 2
        model = _demo_model(args.model, args.tokens_per_second)
        if model is None:
            return 2
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
        # The openai SDK's HTTP client logs every request's URL at INFO, with any
        # credentials in OPENAI_BASE_URL's userinfo: only its warnings are shown.
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            asyncio.run(serve_demo(args.host, args.port, args.tokens_per_second, model))
        except ConfigurationError as exc:
            print(
                f"resumable-fast demo: {exc}\n"
                "Without S2_BASIN the demo keeps its streams in this process (the embedded "
                "backend); with it, they live on S2: check S2_BASIN, S2_ACCESS_TOKEN and, "
                "for s2-lite, S2_ACCOUNT_ENDPOINT and S2_BASIN_ENDPOINT.",
                file=sys.stderr,
            )
            return 2
        except OSError as exc:
            print(
                f"resumable-fast demo: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
