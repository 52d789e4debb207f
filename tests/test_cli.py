"""The ``imagegate`` command as users run it: JSON contract, errors, concurrency, crashes."""

from __future__ import annotations

import asyncio
import getpass
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from core import Caller, ImageService, load_settings
from tests.conftest import png_bytes
from tests.core.test_late_charges import charge_late

ROOT = Path(__file__).resolve().parents[1]
IMAGEGATE = [sys.executable, "-m", "core.cli"]


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(f"""
        [database]
        path = "{tmp_path / "db.sqlite"}"
        [images]
        dir = "{tmp_path / "images"}"
        """)
        + textwrap.dedent(extra)
    )
    return path


def run(
    tmp_path: Path,
    *args: str,
    config: Path | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
):
    cmd = [*IMAGEGATE, "--config", str(config or _config(tmp_path)), *args]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_generate_json_contract_and_byte_identical_rerun(tmp_path):
    args = ("generate", "a red fox", "-n", "3", "--seed", "5", "--size", "640x384", "--json")
    first = json.loads(run(tmp_path, *args).stdout)
    assert set(first) == {
        "job_id",
        "images",
        "model",
        "credits_charged",
        "credits_remaining",
        "warnings",
    }
    assert first["credits_charged"] == 3 and first["model"] == "placeholder:default"
    for image in first["images"]:
        assert set(image) == {"id", "path", "mime", "width", "height", "seed"}
        with Image.open(image["path"]) as img:
            img.load()
            assert img.size == (640, 384) and image["mime"] == "image/png"
    second = json.loads(run(tmp_path, *args).stdout)
    assert [Path(i["path"]).read_bytes() for i in first["images"]] == [
        Path(i["path"]).read_bytes() for i in second["images"]
    ]


def test_out_dir_receives_the_files(tmp_path):
    result = json.loads(
        run(tmp_path, "generate", "x", "--out", str(tmp_path / "out"), "--json").stdout
    )
    path = Path(result["images"][0]["path"])
    assert path.parent == (tmp_path / "out").resolve() and path.is_file()


def test_edit_inpaint_and_upscale_from_files(tmp_path):
    (tmp_path / "in.png").write_bytes(png_bytes((64, 48)))
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 16, 16))
    mask.save(tmp_path / "mask.png")
    edited = json.loads(
        run(
            tmp_path,
            "edit",
            "in.png",
            "--mode",
            "inpaint",
            "--mask",
            "mask.png",
            "--prompt",
            "a hat",
            "--json",
        ).stdout
    )
    with Image.open(edited["images"][0]["path"]) as out:
        original = Image.open(io.BytesIO(png_bytes((64, 48)))).convert("RGB")
        assert (
            out.convert("RGB").crop((16, 16, 64, 48)).tobytes()
            == original.crop((16, 16, 64, 48)).tobytes()
        )
    up = json.loads(run(tmp_path, "upscale", "in.png", "--json").stdout)
    assert (up["images"][0]["width"], up["images"][0]["height"]) == (128, 96)


@pytest.mark.parametrize(
    ("args", "extra", "expected", "code"),
    [
        (("generate", "x", "--model", "nope:x"), "", "unknown model", "invalid_input"),
        (("generate", "x", "--size", "99999x10"), "", "size", "invalid_input"),
        (("generate", "x", "--size", "big"), "", "WIDTHxHEIGHT", "invalid_input"),
        (("generate", "x", "-n", "0"), "", "n: the number of images must be", "invalid_input"),
        (("generate", "x", "-n", "11"), "", "between 1 and 10", "invalid_input"),
        (("edit", "missing.png", "--mode", "variation"), "", "no such file", "invalid_input"),
        (("edit", "notimage.png", "--mode", "variation"), "", "not a PNG", "invalid_input"),
        (("edit", "truncated.png", "--mode", "variation"), "", "damaged", "invalid_input"),
        (("models",), "[quota]\nallowance = 'lots'\n", "[quota] allowance", "config_error"),
        (("models",), "[quota]\nallowanse = 3\n", "[quota] allowanse: unknown key", "config_error"),
        (("models",), "[providers.x]\nkind = 'nope'\n", "[providers.x] kind", "config_error"),
        (("models",), "not toml [", "not valid TOML", "config_error"),
        (
            ("models",),
            "[pricing.operations]\nupscale = -2\n",
            "[pricing] operations: upscale = -2: a price cannot be negative",
            "config_error",
        ),
        (
            ("models",),
            "[pricing.models]\n'placeholder:default' = {upscale = -1}\n",
            "placeholder:default.upscale = -1: a price cannot be negative",
            "config_error",
        ),
        (
            ("models",),
            "[defaults]\njob_deadline_s = inf\n",
            "[defaults] job_deadline_s: Input should be a finite number",
            "config_error",
        ),
    ],
)
def test_bad_input_gives_one_line_and_no_traceback(tmp_path, args, extra, expected, code):
    (tmp_path / "notimage.png").write_text("hello")
    (tmp_path / "truncated.png").write_bytes(png_bytes((400, 400))[:300])
    out = run(tmp_path, *args, "--json", config=_config(tmp_path, extra), check=False)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert json.loads(out.stdout)["error"]["code"] == code


NEBULA = """
[providers.nebulablock]
kind = "nebulablock"
api_key_env = "NEBULABLOCK_API_KEY"
models = ["black-forest-labs/FLUX.1-schnell"]
"""


def test_a_bad_default_model_names_file_and_key_and_models_still_lists(tmp_path):
    config = _config(tmp_path, NEBULA + '[defaults]\nmodel = "nebulablock:FLUX"\n')
    listing = run(tmp_path, "models", config=config, check=False)
    assert listing.returncode == 1
    assert listing.stdout.startswith("nebulablock:black-forest-labs/FLUX.1-schnell  [nebulablock]")
    assert listing.stderr.strip() == (
        f"imagegate: {config}: [defaults] model: unknown model 'nebulablock:FLUX';"
        " choose one of: nebulablock:black-forest-labs/FLUX.1-schnell"
    )
    refs = json.loads(run(tmp_path, "models", "--json", config=config, check=False).stdout)
    assert [m["ref"] for m in refs] == ["nebulablock:black-forest-labs/FLUX.1-schnell"]
    generate = run(tmp_path, "generate", "x", config=config, check=False)
    assert generate.returncode == 1 and f"{config}: [defaults] model" in generate.stderr


def test_configured_providers_hide_the_placeholder_and_say_so(tmp_path):
    out = run(
        tmp_path,
        "generate",
        "x",
        "--model",
        "placeholder:default",
        config=_config(tmp_path, NEBULA),
        check=False,
    )
    assert out.returncode == 1
    assert "unknown model 'placeholder:default'" in out.stderr
    assert "placeholder exists only while no [providers.*] is configured" in out.stderr


def test_an_unreachable_provider_is_named_with_its_address_and_costs_nothing(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/v1"
    stopped = NEBULA + f'base_url = "{base}"\n[defaults]\nmax_retries = 0\n'
    config = _config(tmp_path, stopped)
    env_key = {"NEBULABLOCK_API_KEY": "test-key"}
    out = run(tmp_path, "generate", "x", "--user", "cli:u", config=config, check=False, env=env_key)
    assert out.returncode == 1
    assert out.stderr.strip() == f"imagegate: nebulablock could not be reached (at {base})"
    shown = json.loads(run(tmp_path, "quota", "show", "cli:u", "--json", config=config).stdout)
    assert shown["remaining"] == 50


def test_missing_config_file_is_named(tmp_path):
    out = run(tmp_path, "models", config=tmp_path / "nope.toml", check=False)
    assert out.returncode == 1 and "nope.toml" in out.stderr and "not found" in out.stderr


def test_models_json_lists_operations_and_price(tmp_path):
    models = json.loads(run(tmp_path, "models", "--json").stdout)
    assert models[0]["ref"] == "placeholder:default"
    assert {"ref", "provider", "kind", "operations", "max_images", "price"} <= set(models[0])
    assert "inpaint" in models[0]["operations"]


def test_quota_admin_commands(tmp_path):
    run(tmp_path, "quota", "grant", "discord:42", "7", "--reason", "event prize")
    run(tmp_path, "quota", "allowance", "discord:42", "3")
    shown = json.loads(run(tmp_path, "quota", "show", "discord:42", "--json").stdout)
    assert set(shown) == {
        "user",
        "remaining",
        "allowance",
        "granted",
        "held",
        "in_flight",
        "period",
        "resets_at",
        "debt",
        "late_charged",
    }
    assert (shown["remaining"], shown["granted"], shown["allowance"]) == (10, 7, 3)
    history = json.loads(run(tmp_path, "quota", "history", "discord:42", "--json").stdout)
    me = f"cli:{getpass.getuser()}"
    assert [(e["kind"], e["reason"], e["actor"]) for e in history] == [
        ("allowance", "allowance 50 -> 3 per day", me),
        ("grant", "event prize", me),
    ]
    run(tmp_path, "quota", "allowance", "discord:42", "default")
    lines = run(tmp_path, "quota", "history", "discord:42").stdout.splitlines()
    assert lines[0].endswith(f"allowance 3 -> the default (50) per day  (by {me})")


def test_quota_show_and_history_include_late_charges(tmp_path):
    config = _config(tmp_path, "[quota]\nallowance = 3\n")

    async def late() -> None:
        async with await ImageService.open(load_settings(config), sweeper=False) as service:
            await charge_late(service, Caller(frontend="discord", user_id="7"), 2, spent=2)

    asyncio.run(late())
    # The other job's hold went with the process that made it; the late charge stays.
    shown = run(tmp_path, "quota", "show", "discord:7", config=config).stdout
    assert "1 credit(s) left" in shown and "held 0" in shown
    assert "2 charged late this day (delivered after their reservation was released), 1 owed" in (
        shown
    )
    lines = run(tmp_path, "quota", "history", "discord:7", config=config).stdout.splitlines()
    late = "late_charge  allowance_used +1  granted +0  held +2  debt +1  delivered after"
    assert sum(late in line for line in lines) == 1
    listed = run(tmp_path, "quota", "history", "discord:7", "--json", config=config).stdout
    kinds = [(e["kind"], e["d_debt"]) for e in json.loads(listed)]
    assert kinds[1:3] == [("capture", 0), ("late_charge", 1)]


def test_admin_token_printed_once_listed_and_revoked(tmp_path):
    minted = run(tmp_path, "admin", "token", "cli:ops", "--label", "laptop").stdout.splitlines()
    token = minted[0]
    assert token.startswith("ig_admin_") and " " not in token
    listed = run(tmp_path, "admin", "tokens").stdout
    assert "cli:ops" in listed and "laptop" in listed and token not in listed
    (entry,) = json.loads(run(tmp_path, "admin", "tokens", "--json").stdout)
    assert token.startswith(f"ig_admin_{entry['prefix']}_") and entry["revoked_at"] is None
    assert token not in (tmp_path / "db.sqlite").read_bytes().decode("latin-1")
    run(tmp_path, "admin", "token", "--revoke", entry["prefix"])
    assert json.loads(run(tmp_path, "admin", "tokens", "--json").stdout) == []
    gone = run(tmp_path, "admin", "token", "--revoke", "NOPENOPE", check=False)
    assert gone.returncode != 0 and "NOPENOPE" in gone.stderr


def test_30_concurrent_processes_with_allowance_5(tmp_path):
    config = _config(tmp_path, "[quota]\nallowance = 5\n")
    run(tmp_path, "models", config=config)  # create the database once
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [*IMAGEGATE, "--config", str(config), "generate", f"fox {i}", "--user", "cli:same"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        for i in range(30)
    ]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sum(code == 0 for code, _ in results) == 5
    refused = [err for code, err in results if code != 0]
    assert all("not enough credits" in err for err in refused), refused[:2]
    shown = json.loads(run(tmp_path, "quota", "show", "cli:same", "--json", config=config).stdout)
    assert shown["remaining"] == 0 and shown["held"] == 0


CRASHER = """
import asyncio, sys
from core import Caller, ImageRequest, ImageService, load_settings

async def main():
    service = await ImageService.open(load_settings(sys.argv[1]), sweeper=False)
    model = service.registry.models["placeholder:default"]
    async def hang(plan, count, deadline):
        print("reserved", flush=True)
        await asyncio.sleep(3600)
    model.do_generate = hang
    await service.generate(Caller(frontend="cli", user_id="victim"), ImageRequest(prompt="x", n=4))

asyncio.run(main())
"""


def test_kill_9_during_a_job_loses_and_duplicates_nothing(tmp_path):
    lease_s = 0.2  # the next process releases the dead one's holds once its lease lapsed
    config = _config(tmp_path)
    config.write_text(config.read_text().replace("[images]", f"lease_s = {lease_s}\n[images]"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASHER, str(config)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        assert proc.stdout.readline().strip() == "reserved"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        time.sleep(lease_s)
        held = json.loads(
            run(tmp_path, "quota", "show", "cli:victim", "--json", config=config).stdout
        )
        assert (held["remaining"], held["held"], held["in_flight"]) == (50, 0, 0)
    history = json.loads(
        run(tmp_path, "quota", "history", "cli:victim", "--json", config=config).stdout
    )
    assert sorted(e["kind"] for e in history) == ["expire"] * 3 + ["hold"] * 3


def test_job_show_says_an_image_was_lost_and_never_points_at_it(tmp_path):
    made = json.loads(run(tmp_path, "generate", "a red fox", "-n", "2", "--json").stdout)
    cut, kept = (Path(i["path"]) for i in made["images"])
    cut.write_bytes(cut.read_bytes()[:64])  # as a power cut can leave it

    shown = run(tmp_path, "-v", "job", "show", made["job_id"])
    assert "marked lost" in shown.stderr  # the start-up check reports what it did
    [lost] = [line for line in shown.stdout.splitlines() if "LOST" in line]
    assert lost.strip().startswith("image 1 LOST: truncated (64 of ") and "not served" in lost
    assert str(cut) not in shown.stdout and str(kept) in shown.stdout
    record = json.loads(run(tmp_path, "job", "show", made["job_id"], "--json").stdout)
    assert [bool(i["lost"]) for i in record["images"]] == [True, False]


def test_the_operator_is_not_told_a_job_is_not_theirs(tmp_path):
    out = run(tmp_path, "job", "show", "deadbeef", check=False)
    assert out.returncode == 1 and out.stderr.strip() == "imagegate: no job 'deadbeef'"


@pytest.mark.parametrize(
    ("user", "key"),
    [
        ("alice", "mcp:alice"),
        ("mcp:alice", "mcp:alice"),
        ('al"i\\ce', 'mcp:al"i\\ce'),
        ("discord:1234", "discord:1234"),
    ],
)
def test_mcp_token_users_are_wallets(user, key):
    from core.cli import _mcp_user

    assert _mcp_user(user) == key


def test_mcp_token_is_stored_in_the_database_listed_and_revoked(tmp_path):
    config = _config(tmp_path)
    out = run(tmp_path, "mcp", "token", "alice", "--label", "laptop", config=config).stdout
    token, comment, hint = out.splitlines()
    assert token.startswith("ig_mcp_") and "mcp:alice" in comment and "shown only once" in comment
    prefix = token.split("_")[2]
    assert f"imagegate mcp token --revoke {prefix}" in hint
    assert config.read_text() == _config(tmp_path).read_text()  # no config edit
    [listed] = json.loads(run(tmp_path, "mcp", "tokens", "--json", config=config).stdout)
    assert (listed["prefix"], listed["user"], listed["label"]) == (prefix, "mcp:alice", "laptop")
    assert listed["created_at"] and listed["last_used_at"] is None and "token" not in listed
    text = run(tmp_path, "mcp", "tokens", config=config).stdout
    assert f"ig_mcp_{prefix}_…" in text and token not in text and "used never" in text
    revoked = run(tmp_path, "mcp", "token", "--revoke", prefix, config=config).stdout
    assert revoked.strip() == f"revoked ig_mcp_{prefix}_… (mcp:alice)"
    assert run(tmp_path, "mcp", "tokens", config=config).stdout.startswith("no mcp tokens")
    [gone] = json.loads(run(tmp_path, "mcp", "tokens", "--all", "--json", config=config).stdout)
    assert gone["revoked_at"]


def test_mcp_token_refuses_bad_users_and_unknown_prefixes(tmp_path):
    for bad in ("two words", "a:b:c", ""):
        refused = run(tmp_path, "mcp", "token", bad, check=False)
        assert refused.returncode == 1 and "alice" in refused.stderr, bad
    unknown = run(tmp_path, "mcp", "token", "--revoke", "AbCd1234", check=False)
    assert unknown.returncode == 1 and "no mcp token with prefix" in unknown.stderr
    admin = run(tmp_path, "admin", "token", "ops").stdout.splitlines()[0]
    crossed = run(tmp_path, "mcp", "token", "--revoke", admin.split("_")[2], check=False)
    assert crossed.returncode == 1  # an admin token is not an MCP token


def test_help_is_for_users_with_examples(capsys):
    from core.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and "ImageService" not in text
    assert "examples:\n  imagegate generate " in text and "config.example.toml" in text
