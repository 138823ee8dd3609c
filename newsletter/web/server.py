"""Run the app under uvicorn: one process or --workers N, graceful shutdown, a quiet log.

uvicorn's own access log prints the query string (the tokens) and the client address,
so it is off; app.AccessLog writes method, path, status and duration instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from newsletter.errors import ConfigError
from newsletter.settings import Settings, load_settings

ROOT_ENV = "NEWSLETTER_DIR"  # how worker processes find the newsletter

LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "access": {"format": "%(asctime)s %(message)s"},
    },
    "handlers": {
        "default": {"class": "logging.StreamHandler", "formatter": "plain",
                    "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access",
                   "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "newsletter.web": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "newsletter.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


def app_from_env() -> Any:
    """The app factory each uvicorn worker calls (the newsletter folder comes from the env)."""
    from newsletter.web.app import create_app

    return create_app(load_settings())


def serve(settings: Settings, host: str | None = None, port: int | None = None,
          workers: int | None = None, quiet: bool = False,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; requests in flight get 10 seconds to finish.

    host, port and workers default to [server] in newsletter.toml (127.0.0.1:8080, 1).
    The settings are checked (ConfigError) before anything listens; `announce` then gets
    the one line to print.
    """
    config = settings.web
    host = host or config.host
    port = config.port if port is None else port
    workers = workers or config.workers
    import uvicorn

    from newsletter.web.app import create_app
    from newsletter.web.timeouts import KEEP_ALIVE, GuardedHTTP

    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    common: dict[str, Any] = {
        "host": host, "port": port, "log_config": LOG_CONFIG, "access_log": False,
        "proxy_headers": False,  # client IPs: context.client_ip with [server] trusted_proxies
        "server_header": False, "timeout_graceful_shutdown": 10,
        # Idle and slow clients are let go: KEEP_ALIVE s between requests, READ_TIMEOUT s
        # for one request's headers and body (timeouts.py).
        "timeout_keep_alive": KEEP_ALIVE, "http": GuardedHTTP,
        "log_level": "warning" if quiet else "info",
    }
    app = create_app(settings)  # checks the settings and migrates, before forking workers
    if announce is not None:
        announce(f"Serving {settings.name} on http://{host}:{port}/ (Ctrl-C stops)")
    if workers == 1:
        uvicorn.run(app, **common)
        return
    os.environ[ROOT_ENV] = str(settings.root)
    uvicorn.run("newsletter.web.server:app_from_env", factory=True, workers=workers, **common)
