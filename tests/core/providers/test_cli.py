"""End to end: the ``imagegate`` console script against each emulator over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulators import Fault, create_emulator, running

from .conftest import KINDS, decode

IMAGEGATE = Path(sys.executable).with_name("imagegate")
EXTRA_ARGS = {
    "deepmode": ["--aspect", "1:1", "-n", "2"],
    "deepimage": ["--size", "64x64", "--seed", "3"],
    "hive": ["-n", "2", "--negative", "rain"],
    "hive_v3": ["--size", "256x256", "--seed", "9"],
    "nebulablock": ["--size", "64x64", "--steps", "4"],
    "openai": ["--size", "256x256"],
    "sdwebui": ["--size", "64x64", "-n", "2", "--seed", "5"],
    "comfyui": ["--size", "64x64", "--negative", "rain"],
    "horde": ["--size", "64x64", "--steps", "8"],
}


def _config(tmp_path: Path, providers: dict[str, dict]) -> Path:
    lines = [
        "[database]",
        f'path = "{tmp_path / "db.sqlite"}"',
        "[images]",
        f'dir = "{tmp_path / "images"}"',
        "[defaults]",
        "job_deadline_s = 20",
    ]
    for name, provider in providers.items():
        lines.append(f"[providers.{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in provider.items()]
    path = tmp_path / "imagegate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value) -> str:
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _imagegate(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(IMAGEGATE), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=config.parent,
    )


def _provider(kind: str, url: str, emu) -> dict:
    spec = KINDS[kind]
    return {
        "kind": kind,
        "base_url": url + emu.base_path,
        "api_key_env": f"IG_CLI_{kind.upper()}_KEY",
        "models": [spec.model],
        "timeout_s": 10,
        "poll_interval_s": 0.05,
        **spec.provider,
    }


@pytest.mark.parametrize("kind", list(KINDS))
def test_generate_json_against_the_emulator(tmp_path, kind):
    spec = KINDS[kind]
    emu = create_emulator(spec.emulator, image_size=(64, 64), **spec.emulator_options)
    key = {f"IG_CLI_{kind.upper()}_KEY": getattr(emu, spec.key_attr)}
    with running(emu) as url:
        config = _config(tmp_path, {"p": _provider(kind, url, emu)})
        out = tmp_path / "out"
        ref = f"p:{spec.model}"
        args = ["generate", "a fox", "--model", ref, "--json", "--out", str(out)]
        done = _imagegate(config, *args, *EXTRA_ARGS[kind], env=key)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    count = 2 if "-n" in EXTRA_ARGS[kind] else 1
    assert len(result["images"]) == count and result["credits_charged"] == count
    assert result["model"] == ref and result["credits_remaining"] == 50 - count
    for image in result["images"]:
        path = Path(image["path"])
        assert path.parent == out and decode(path.read_bytes()).size == (
            image["width"],
            image["height"],
        )
    calls = [r for r in emu.requests if r.method == "POST"]
    assert calls and calls[0].path == spec.api_path
    assert getattr(emu, spec.key_attr) not in done.stdout + done.stderr


def test_a_refusal_exits_non_zero_with_a_json_error_and_costs_nothing(tmp_path):
    emu = create_emulator("nebulablock", image_size=(64, 64))
    emu.inject(Fault(moderation=True))
    key = {"IG_CLI_NEBULABLOCK_KEY": emu.api_key}
    with running(emu) as url:
        config = _config(tmp_path, {"nb": _provider("nebulablock", url, emu)})
        done = _imagegate(config, "generate", "a fox", "--json", "--user", "cli:ann", env=key)
        quota = _imagegate(config, "quota", "show", "cli:ann", "--json", env=key)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "content_rejected"
    assert "refused" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert json.loads(quota.stdout)["remaining"] == 50


def test_providers_with_balances(tmp_path):
    emus = {kind: create_emulator(kind) for kind in ("deepmode", "deepimage", "nebulablock")}
    env = {f"IG_CLI_{kind.upper()}_KEY": emu.api_key for kind, emu in emus.items()}
    with running(emus["deepmode"]) as dm, running(emus["deepimage"]) as di:
        with running(emus["nebulablock"]) as nb:
            providers = {
                kind: _provider(kind, url, emus[kind])
                for kind, url in (("deepmode", dm), ("deepimage", di), ("nebulablock", nb))
            }
            config = _config(tmp_path, providers)
            done = _imagegate(config, "providers", "--json", "--balance", env=env)
            models = _imagegate(config, "models", "--json", env=env)
    assert done.returncode == 0, done.stderr
    listed = {m["kind"]: (m["operations"], m["max_images"]) for m in json.loads(models.stdout)}
    assert listed == {
        "deepmode": (["generate", "inpaint", "avatar", "upscale"], 8),
        "deepimage": (
            ["generate", "variation", "sketch", "inpaint", "background", "avatar", "upscale"],
            1,
        ),
        "nebulablock": (["generate"], 1),
    }
    balances = {p["name"]: p["balance"] for p in json.loads(done.stdout)}
    assert balances == {
        "deepmode": "1000 credits",
        "deepimage": "100 credits",
        "nebulablock": "$100.00",
    }


def test_providers_balance_shows_kudos_and_served_models(tmp_path):
    horde, webui = create_emulator("horde"), create_emulator("sdwebui", api_key=None)
    with running(horde) as horde_url, running(webui) as webui_url:
        providers = {
            "h": {"kind": "horde", "base_url": horde_url, "api_key_env": "IG_CLI_H_KEY"},
            "w": {"kind": "sdwebui", "base_url": webui_url},
        }
        config = _config(tmp_path, providers)
        env = {"IG_CLI_H_KEY": horde.api_key}
        done = _imagegate(config, "providers", "--balance", env=env)
    assert done.returncode == 0, done.stderr
    h_line, w_line = done.stdout.splitlines()
    assert "balance: 1000 kudos" in h_line and "serves: stable_diffusion" in h_line
    assert "key -: not needed" in w_line and "v1-5-pruned-emaonly.safetensors [" in w_line


def test_plain_output_leaves_out_a_seed_the_provider_did_not_report(tmp_path):
    emu = create_emulator("nebulablock", image_size=(64, 64))
    key = {"IG_CLI_NEBULABLOCK_KEY": emu.api_key}
    with running(emu) as url:
        config = _config(tmp_path, {"nb": _provider("nebulablock", url, emu)})
        done = _imagegate(config, "generate", "a fox", "--size", "64x64", env=key)
    assert done.returncode == 0, done.stderr
    image_line, job_line = done.stdout.splitlines()[:2]
    assert image_line.endswith("  (64x64)")
    shown = _imagegate(config, "job", "show", job_line.split()[1], env=key)
    assert "64x64 (imagegate://images/" in shown.stdout and "None" not in shown.stdout


def test_deepmode_upscales_its_own_result_by_file_id_or_uri(tmp_path):
    spec = KINDS["deepmode"]
    emu = create_emulator(spec.emulator, image_size=(64, 64), **spec.emulator_options)
    key = {"IG_CLI_DEEPMODE_KEY": emu.api_key}
    ref = f"p:{spec.model}"
    with running(emu) as url:
        config = _config(tmp_path, {"p": _provider("deepmode", url, emu)})
        out = tmp_path / "out"
        made = _imagegate(config, "generate", "a fox", "--json", "--out", str(out), env=key)
        assert made.returncode == 0, made.stderr
        image = json.loads(made.stdout)["images"][0]
        copied = tmp_path / "elsewhere.png"  # the same bytes under another name
        copied.write_bytes(Path(image["path"]).read_bytes())
        image_id = image["id"]
        upscales = [
            _imagegate(config, "upscale", str(source), "--model", ref, "--json", env=key)
            for source in (image["path"], copied, image_id, f"imagegate://images/{image_id}")
        ]
    for done in upscales:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["images"][0]["width"] == 4 * image["width"]
    upscale_calls = [r for r in emu.requests if r.path.endswith("/api/images/upscale")]
    # Each time Deepmode was asked to upscale its own image, by the id it gave it.
    assert len(upscale_calls) == 4 and len({c.json["image_id"] for c in upscale_calls}) == 1


def test_an_unknown_image_reference_costs_nothing(tmp_path):
    config = _config(tmp_path, {"placeholder": {"kind": "placeholder"}})
    for source, words in (
        ("nosuchid", "no such file, and no image 'nosuchid' of yours"),
        ("imagegate://images/nosuchid", "no image 'nosuchid' of yours"),
        ("missing.png", "no such file: missing.png"),
    ):
        done = _imagegate(config, "upscale", source, "--json", "--user", "cli:ann", env={})
        assert done.returncode == 1 and words in done.stderr, done.stderr
    quota = _imagegate(config, "quota", "show", "cli:ann", "--json", env={})
    assert json.loads(quota.stdout)["remaining"] == 50


def test_documented_options_reach_deepmode_and_deep_image_from_the_cli(tmp_path):
    dm = create_emulator("deepmode", image_size=(64, 64), **KINDS["deepmode"].emulator_options)
    di = create_emulator("deepimage", image_size=(64, 64))
    env = {"IG_CLI_DEEPMODE_KEY": dm.api_key, "IG_CLI_DEEPIMAGE_KEY": di.api_key}
    with running(dm) as dm_url, running(di) as di_url:
        config = _config(
            tmp_path,
            {"dm": _provider("deepmode", dm_url, dm), "di": _provider("deepimage", di_url, di)},
        )
        dm_ref, di_ref = f"dm:{KINDS['deepmode'].model}", f"di:{KINDS['deepimage'].model}"
        x4 = ["generate", "a fox", "--model", dm_ref, "--option", "upscale=true", "--json"]
        typed = ["generate", "a fox", "--model", di_ref, "--size", "64x64", "--json"]
        typed += ["--option", "model_type=premium", "--option", 'enhancements=["denoise"]']
        runs = [_imagegate(config, *x4, env=env), _imagegate(config, *typed, env=env)]
        image = json.loads(runs[1].stdout)["images"][0]["id"]
        prompted = ["upscale", image, "--model", di_ref, "--scale", "3", "--prompt", "crisp fur"]
        runs.append(_imagegate(config, *prompted, "--json", env=env))
        bad = ["generate", "a fox", "--model", di_ref, "--option", "model_typ=premium"]
        refused = _imagegate(config, *bad, "--json", env=env)
    for done in runs:
        assert done.returncode == 0, done.stderr
    assert [r.json["upscale"] for r in dm.requests if r.path.endswith("/generate")] == [True]
    generate, upscale = [r.json for r in di.requests if r.path.startswith("/rest_api/process")]
    assert generate["background"]["generate"]["model_type"] == "premium"
    assert generate["enhancements"] == ["denoise"]
    assert upscale["width"] == upscale["height"] == "300%"
    assert upscale["background"]["generate"] == {
        "description": "crisp fur",
        "adapter_type": "upscale",
    }
    assert (
        refused.returncode == 1
        and "unknown option" in json.loads(refused.stdout)["error"]["message"]
    )
