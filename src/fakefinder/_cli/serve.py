"""`fakefinder serve --model M`: the verdict web app on this machine (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    p.description = ("A local web app: drop in a video or an image, see P(fake), what the threshold means, a "
                     "timeline with each sampled frame and its faces, face tracks and Grad-CAM heatmaps; a JSON "
                     "API for programs (POST /api/predict). Works offline.")
    _options.add_model_argument(p, several=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--token", help="required on every request (Bearer header, or ?token= once in the browser)")
    p.add_argument("--allow-dir", type=Path, help="accept paths of files on the server, but only under DIR")
    from ..config import InputLimits, ServeSettings

    _options.add_settings(p, ServeSettings)
    _options.add_settings(p, InputLimits, preset="serve")
    _options.add_model(p)


def _named(models: list[str]) -> dict[str, str]:
    """NAME=MODEL or MODEL (named after its file, or its run id's first 8 characters)."""
    out = {}
    for text in models:
        name, sep, model = text.partition("=")
        if not sep:
            model, name = text, Path(text).stem if Path(text).suffix or "/" in text else text[:8]
        out[name] = model
    return out


def _port(text: str) -> int:
    import argparse

    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0-65535, 0: any free one), got {text!r}")
    return int(text)


def _listen(host: str, port: int):
    """The listening socket, bound before anything is printed: a port in use is one line, not another program's
    URL followed by a traceback."""
    import socket

    from ..errors import UsageError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run(args) -> int:
    from .._packages import require

    require("serve", ("fastapi", "uvicorn", "python_multipart", "captum"), what="fakefinder serve")
    import uvicorn

    from .._text import printable
    from ..config import InputLimits, ServeSettings
    from ..errors import UsageError
    from ..serve import create_app
    from ..serve.app import is_loopback
    from ..serve.jobs import JobQueue

    if not is_loopback(args.host) and not args.token:
        raise UsageError(f"binding to {args.host} lets other machines in: give --token TOKEN (or bind 127.0.0.1)")
    sock = _listen(args.host, args.port)  # a port in use fails before the models load
    queue = JobQueue(_named(args.model), _options.settings_from(args, ServeSettings), device=args.device,
                     tracking_uri=_options.tracking_uri(args), allow_dir=args.allow_dir,
                     limits=_options.settings_from(args, InputLimits, "serve"), runtime=args.runtime)
    try:
        for model in queue.describe_models():  # load every model now: a bad one fails here, not in a request
            print(printable(f"model {model['name']}: {model['backbone']}, {model['meaning']}"), flush=True)
        port = sock.getsockname()[1]
        print(f"fakefinder serve: http://{args.host}:{port}/  (Ctrl-C to stop)", flush=True)
        config = uvicorn.Config(create_app(queue, token=args.token, host=args.host), log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        queue.close()
        sock.close()
    return 0
