"""`ironwatt run` on a broker URL the uplink cannot use: one line naming mqtt.url, exit 2.

`ironwatt check` refuses such a URL, so the child below hands the daemon a config that
bypassed the checks (a validated file whose mqtt.url is then replaced), as a file edited
between the check and the start, or a loader that missed a case, would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.conftest import ROOT

# In the child: the real CLI, with the loader's result given a malformed URL.
_CHILD = """
import sys

import gateway.daemon.lifecycle as lifecycle
from gateway.cli import main
from gateway.config.load import load_config


def bypassed(path, **_kwargs):
    cfg = load_config(path)
    return cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"url": sys.argv[2]})})


lifecycle.load_config_isolated = bypassed
sys.exit(main(["run", "-c", sys.argv[1]]))
"""


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mqtt//broker:1883", "the scheme must be mqtt:// or mqtts://"),
        ("mqtt://broker:99999", "Port out of range"),
    ],
)
def test_a_malformed_broker_url_is_a_config_error(tmp_path: Path, url: str, why: str) -> None:
    config = tmp_path / "ironwatt.toml"
    config.write_text(f"""
[gateway]
id = "gw-bad-url"
site = "s"
timezone = "UTC"
data_dir = "{tmp_path / "data"}"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[energy]
intervals = ["1m"]
""")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(config), url],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # the unit's RestartPreventExitStatus=2
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1, done.stderr
    assert f"mqtt.url '{url}'" in lines[0], lines[0]
    assert why in lines[0], lines[0]
    assert f"ironwatt check -c {config}" in lines[0], lines[0]
