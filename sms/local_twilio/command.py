"""The command line: ``python -m sms.local_twilio``, a local Twilio until SIGTERM or SIGINT.

The demo and the benchmark start it this way and read its URL from the first line it prints.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

from sms import local_twilio
from sms.local_twilio.twilio import LocalTwilio


def main(argv: Sequence[str] | None = None) -> int:
    """Run a local Twilio until SIGTERM or SIGINT; print its URL first."""
    parser = argparse.ArgumentParser(
        prog="python -m sms.local_twilio",
        # --help describes the package, as it did while it was one module.
        description=local_twilio.__doc__,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--sms-url", default=None, help="our inbound-SMS webhook")
    parser.add_argument("--callback-backoff", type=float, default=1.0, help="seconds")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with LocalTwilio(
        args.account_sid,
        args.auth_token,
        host=args.host,
        port=args.port,
        sms_url=args.sms_url,
        callback_backoff=args.callback_backoff,
    ) as twilio:
        print(twilio.url, flush=True)
        while not stopping.wait(0.5):
            pass
    return 0
