"""The NebulaBlock emulator as the benchmarks run it, in its own process so its CPU is not
counted as imagegate's: ``python -m bench.emulator [--delay S] [--noise] [--prewarm WxH]``.

Prints ``ready BASE_URL API_KEY`` once it listens. The API is the emulator's own
(``tests/emulators/nebulablock.py``); two things change, both to keep the emulator from being
the bottleneck: each size is drawn once and every answer gets distinct bytes from a PNG text
chunk holding the request's seed (so imagegate stores every image, as it would real ones), and
``--noise`` draws photo-like noise so a 2048x2048 PNG weighs what a real one does (~8 MB).
``--delay`` makes every generation take that long (``Fault(delay_s=...)``).
"""

from __future__ import annotations

import argparse
import functools
import io
import socket
import struct
import zlib

import uvicorn
from PIL import Image

from tests.emulators import Fault, create_emulator
from tests.emulators import nebulablock as nebula_module


@functools.lru_cache(maxsize=8)
def _drawn(size: tuple[int, int], noise: bool) -> bytes:
    if not noise:
        return _original_render("bench", size)
    channels = []
    for sigma in (50, 60, 70):
        low = Image.effect_noise((128, 128), sigma).resize(size, Image.Resampling.BICUBIC)
        channels.append(Image.blend(low, Image.effect_noise(size, 12), 0.5))
    buf = io.BytesIO()
    Image.merge("RGB", channels).save(buf, format="PNG")
    return buf.getvalue()


def _with_text(png: bytes, text: str) -> bytes:
    """``png`` plus a tEXt chunk before IEND: distinct bytes, same pixels."""
    data = b"bench\x00" + text.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunk + png[-12:]


_original_render = nebula_module._render


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator", description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per generation")
    parser.add_argument("--noise", action="store_true", help="photo-like, incompressible images")
    parser.add_argument("--prewarm", default="64x64", help="draw this size before serving")
    args = parser.parse_args()

    def render(seed: str, size: tuple[int, int], *_: object, **__: object) -> bytes:
        return _with_text(_drawn(tuple(size), args.noise), seed)

    nebula_module._render = render
    emu = create_emulator("nebulablock", credits=1e12, image_size=(64, 64))
    if args.delay:
        emu.inject(Fault(delay_s=args.delay, path="/images/generation"), times=10**12)
    # Recording every request (and its time, for rate limits the benchmarks do not set) would
    # grow without bound and slow each request down; the benchmarks read neither.
    emu.requests = _Discard()
    emu._rate_limit = lambda: None  # type: ignore[method-assign]
    width, height = (int(side) for side in args.prewarm.lower().split("x"))
    _drawn((width, height), args.noise)

    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say TCP,
    # and without it every keep-alive response stalls ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # connections made before uvicorn runs wait in the backlog
    # Idle keep-alive connections stay open (uvicorn closes them after 5 s by default): a
    # benchmark that pauses one client while another runs must not hit that race.
    config = uvicorn.Config(
        emu.app,
        log_level="error",
        access_log=False,
        lifespan="off",
        backlog=4096,
        timeout_keep_alive=600,
    )
    server = uvicorn.Server(config)
    port = sock.getsockname()[1]
    print(f"ready http://127.0.0.1:{port}{emu.base_path} {emu.api_key}", flush=True)
    server.run(sockets=[sock])


class _Discard(list):
    def append(self, item: object) -> None:
        pass


if __name__ == "__main__":
    main()
