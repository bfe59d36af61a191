"""``python -m field_app.demo [--keep FOLDER]``: the demo's entry point. It reads the
environment once here and hands it to the parts that start servers."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from field_app.demo import __doc__ as about
from field_app.demo.central import central_demo
from field_app.demo.tablets import demo, hub_demo


def run(argv: list[str], env: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m field_app.demo", description=about)
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        run_parts(args.keep, env)
    else:
        with tempfile.TemporaryDirectory(prefix="field-app-demo-") as tmp:
            run_parts(Path(tmp), env)
    print("\ndemo finished")
    return 0


def run_parts(folder: Path, env: Mapping[str, str]) -> None:
    demo(folder / "tablet")
    hub_demo(folder)
    central_demo(folder / "central", env)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], os.environ))
