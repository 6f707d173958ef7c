"""The built wheel installs only under `faregate/`, and CI runs the README's commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)[:2]


def test_ci_runs_the_readme_test_command():
    serve, tests = readme_commands()
    assert "faregate serve" in serve
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_wheel_installs_as_faregate_namespace_only(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True, timeout=300,
    )
    [wheel] = dist.glob("faregate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"faregate", next(t for t in tops if t.endswith(".dist-info"))}
    assert "faregate/pricing/prices.toml" in names
    assert "faregate/storage/migrations/0001_ledger.sql" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    zipfile.ZipFile(wheel).extractall(purelib)  # a wheel install is an unzip
    # Dependencies come from this environment; faregate itself only from the wheel.
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    out = subprocess.run(
        [str(py), "-c",
         "import faregate.proxy, faregate.pricing, faregate.storage, sys;"
         "print(faregate.proxy.__file__);"
         "print(faregate.pricing.load_price_table().version)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(purelib)
    for generic in ("proxy", "pricing", "storage"):
        assert not (Path(purelib) / generic).exists()


def test_readme_stands_on_its_own_and_names_what_tests_need():
    text = (ROOT / "README.md").read_text()
    assert "DESIGN" not in text and "../shared" not in text  # not in the repository
    after_tests = text.split(readme_commands()[1], 1)[1].split("\n## ", 1)[0]
    for need in ("chromium", "promtool", "node", ".ci/run"):
        assert need in after_tests, need
