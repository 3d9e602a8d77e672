"""The agent with required model signatures: a real registry, ``publish --sign-key`` and the real
``model_signing`` package; an unsigned, tampered or untrusted version never runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.main import main
from tests.agentlab import SERVE, Lab, stop_workloads
from tests.services.registry import run_registry
from tests.trust.modelsigning import ms_sign, ms_verifies
from tests.trust.test_models import ec_key

pytestmark = pytest.mark.integration

POLICY = "  policy:\n    modelSignatures: {required: true, keys: [release, vendor]}\n"


def _publish(address: str, src: Path, tag: str, *extra: str) -> str:
    files = [str(p) for p in sorted(src.iterdir())]
    out = subprocess.run([sys.executable, "-m", "reconciler", "publish", *files, "--to",
                          f"{address}/models/counter:{tag}", *extra], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _source(root: Path, version: str) -> Path:
    src = root / f"src-{version}"
    src.mkdir()
    (src / "serve.py").write_bytes(SERVE.read_bytes())
    (src / "weights.bin").write_bytes(f"weights {version}".encode() * 1000)
    return src


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], dict[str, Path]]]:
    work = tmp_path_factory.mktemp("signed")
    keys = {"release": ec_key(work, "release"), "vendor": ec_key(work, "vendor")}
    with run_registry(work) as reg:
        refs = {"1.0": _publish(reg.address, _source(work, "1.0"), "1.0", "--sign-key", str(keys["release"][0])),
                "2.0": _publish(reg.address, _source(work, "2.0"), "2.0")}
        src = _source(work, "3.0")
        ms_sign(src, keys["vendor"][0])  # the real model_signing package, published as a plain file
        refs["3.0"] = _publish(reg.address, src, "3.0")
        src = _source(work, "4.0")
        ms_sign(src, keys["release"][0])
        (src / "weights.bin").write_bytes(b"swapped after signing")
        refs["4.0"] = _publish(reg.address, src, "4.0")
        yield reg.address, refs, {"release": keys["release"][1], "vendor": keys["vendor"][1]}


@pytest.fixture
def lab(tmp_path: Path, signed: tuple[str, dict[str, str], dict[str, Path]]) -> Iterator[Lab]:
    address, refs, _ = signed
    lab = Lab(tmp_path, address, refs)
    lab.setup()
    with stop_workloads(lab.data_dir):
        yield lab


def _pin(lab: Lab, version: str) -> None:
    lab.commit({"groups/all.yaml": lab.group_yaml(version)}, f"pin {version}")


def _model(lab: Lab) -> dict[str, object]:
    models = lab.status()["models"]
    assert isinstance(models, list)
    return dict(models[0])


def test_scenario_07_unsigned_artifact_is_not_activated(
        lab: Lab, signed: tuple[str, dict[str, str], dict[str, Path]]) -> None:
    public = signed[2]
    fleet = (lab.work / "fleet.yaml").read_text()
    lab.commit({"fleet.yaml": fleet + POLICY, ".fleet/model-keys/release.pub": public["release"].read_text()},
               "require model signatures; the release key lives in the repo")
    config = lab.config_path(trust={"modelKeys": {"vendor": str(public["vendor"])}})

    def run() -> int:
        return main(["agent", "--config", str(config), "--once"])

    assert run() == 0
    assert _model(lab)["signedBy"] == "release" and json.loads(lab.get("/healthz")[1])["version"] == "1.0"
    for version, reason in (("2.0", "the model has no signature (model.sig missing)"),
                            ("4.0", "the model's files do not match the signature (changed: weights.bin)")):
        _pin(lab, version)
        assert run() == 1, version
        ready = next(c for c in lab.status()["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "VerificationFailed", ready
        assert f"model counter {version} is not activated: {reason}" in ready["message"]
        assert json.loads(lab.get("/healthz")[1])["version"] == "1.0"  # the previous one keeps running
        assert _model(lab)["version"] == "1.0" and _model(lab)["signedBy"] == "release"
    # model_signing's own verdict agrees on the activated directories (it wants the real path, not the link)
    store = lab.data_dir / "models" / "counter"
    assert ms_verifies((store / "1.0").resolve(), public["release"], ignore=[".reconciler-manifest.json"])
    assert not ms_verifies((store / "4.0").resolve(), public["release"], ignore=[".reconciler-manifest.json"])
    # signed with the real model_signing package by the device-held vendor key
    _pin(lab, "3.0")
    assert run() == 0
    assert _model(lab)["signedBy"] == "vendor" and json.loads(lab.get("/healthz")[1])["version"] == "3.0"
    assert ms_verifies((store / "3.0").resolve(), public["vendor"], ignore=[".reconciler-manifest.json"])
    # a key the policy does not name is not trusted, even when the device holds it
    lab.commit({"fleet.yaml": fleet + POLICY.replace("[release, vendor]", "[release]")}, "vendor no longer trusted")
    assert run() == 1
    ready = next(c for c in lab.status()["conditions"] if c["type"] == "Ready")
    assert "model counter 3.0 is not activated: signed by a key that is not allowed" in ready["message"]
    assert json.loads(lab.get("/healthz")[1])["version"] == "3.0"  # what runs keeps running
