"""Run one emulator: `python -m tests.emulators nebulablock --port 8001 [--key KEY]`.

The self-hosted kinds take credentials as `user:password` (HTTP basic auth); `--no-auth` serves
them open, as a WebUI started without `--api-auth` or a ComfyUI without a proxy. `--step-delay`
makes each sampling step of sdwebui/comfyui (and each Horde image) take that long, so progress
can be watched.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from . import KINDS, create_emulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--key", help="API key to accept (default test-<kind>-key)")
    parser.add_argument("--v3-key", help="hive only: the v3 Bearer key")
    parser.add_argument("--size", help="default image size WxH where the API has no size field")
    parser.add_argument("--no-auth", action="store_true", help="sdwebui/comfyui: no basic auth")
    parser.add_argument("--step-delay", type=float, default=0.0, help="seconds per step/image")
    args = parser.parse_args(argv)

    options: dict = {"api_key": args.key}
    if args.size:
        width, height = args.size.lower().split("x")
        options["image_size"] = (int(width), int(height))
    if args.kind == "hive" and args.v3_key:
        options["v3_api_key"] = args.v3_key
    if args.kind in ("sdwebui", "comfyui"):
        options["api_key"] = None if args.no_auth else args.key or f"imagegate:test-{args.kind}-key"
        options["step_delay_s"] = args.step_delay
    elif args.kind == "horde" and args.step_delay:
        options["job_duration_s"] = args.step_delay
    emu = create_emulator(args.kind, **options)

    print(f"{args.kind} emulator")
    print(f"  base_url: http://{args.host}:{args.port}{emu.base_path}")
    print(f"  api_key:  {emu.api_key or '(none: open)'}")
    if args.kind == "hive":
        print(f"  v3 key:   {emu.v3_api_key}")
    sys.stdout.flush()  # show the URL at once even when stdout is a pipe
    uvicorn.run(emu.app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
