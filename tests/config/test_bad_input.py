"""The bad-input corpus: every broken config in cases/ is refused with exactly its expected report.

`<name>.toml` is the config, `<name>.expected` the report `ironwatt check` prints on stderr,
with `{file}` for the config's path and `{dir}` for its folder (the test's tmp dir).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.sim.plant import demo_config
from tests.config.support import CASES, check, stage

NAMES = sorted(p.stem for p in CASES.glob("*.toml"))
# file:LINE: key.path: message; a TOML syntax error has no key path, only its line and column.
PROBLEM = re.compile(
    r"^\{file\}:\d+: (?:[a-z0-9_-]+(?:\[\d+\])*(?:\.[a-z0-9_-]+(?:\[\d+\])*)*: |not valid TOML)"
)


def test_corpus_is_complete() -> None:
    assert len(NAMES) >= 25
    missing = [n for n in NAMES if not (CASES / f"{n}.expected").is_file()]
    assert missing == []
    orphans = [p.stem for p in CASES.glob("*.expected") if p.stem not in NAMES]
    assert orphans == []


@pytest.mark.parametrize("name", NAMES)
def test_case(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = stage(CASES / f"{name}.toml", tmp_path)
    run = check(config, capsys)
    report = run.err.replace(str(config), "{file}").replace(str(tmp_path), "{dir}")
    expected = (CASES / f"{name}.expected").read_text(encoding="utf-8")
    assert report == expected
    assert run.status == 2
    assert run.out == ""
    assert "Traceback" not in run.err
    *problems, total = report.splitlines()
    assert problems, "a refused config names at least one problem"
    for line in problems:
        assert PROBLEM.match(line), line
    count = len(problems)
    assert total == f"{count} problem{'s' if count != 1 else ''}: the configuration was refused"
    lines = [int(line.split(":")[1]) for line in problems]
    assert lines == sorted(lines), "problems are sorted by line"


def test_several_problems_are_all_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shape errors and cross-key errors of one file come in one report."""
    run = check(stage(CASES / "several_problems.toml", tmp_path), capsys)
    keys = {line.split(": ")[1] for line in run.err.splitlines()[:-1]}
    assert {
        "gateway.id",  # a name
        "gateway.timezone",  # cross-check, found despite the shape errors
        "mqtt.url",
        "devices[0].unit",
        "devices[0].points[0].address",
        "devices[0].points[0].rollover",
        "devices[1].name",  # duplicate device
        "groups[0].members[1]",  # a member that does not exist
    } <= keys


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = check(tmp_path / "nope.toml", capsys)
    assert run.status == 2
    assert run.err.startswith(f"{tmp_path / 'nope.toml'}: cannot read the file: No such file")
    assert "Traceback" not in run.err


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[gateway]\nid = "caf\xe9"\n')
    run = check(path, capsys)
    assert run.status == 2
    assert "not UTF-8" in run.err


def test_private_secret_file_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same config as the 0644 case, pointed at the 0600 file, passes."""
    text = (CASES / "secret_readable_by_others.toml").read_text(encoding="utf-8")
    source = tmp_path / "src" / "ok.toml"
    source.parent.mkdir()
    source.write_text(text.replace("secret-644.txt", "secret-600.txt"), encoding="utf-8")
    staged = tmp_path / "run"
    staged.mkdir()
    run = check(stage(source, staged), capsys)
    assert run.status == 0, run.err
    assert "password from" in run.out


def test_byte_order_mark_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Notepad saves UTF-8 with a BOM; the file is still a config."""
    text = (
        (CASES / "unit_id_300.toml").read_text(encoding="utf-8").replace("unit = 300", "unit = 3")
    )
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    run = check(path, capsys)
    assert run.status == 0, run.err


def test_locator_never_raises_on_a_refused_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys the scan cannot follow (unicode in a quoted key, odd spacing) still get a report."""
    path = tmp_path / "odd.toml"
    path.write_text(
        '[gateway]\nid = "gw1"\nsite = "plant1"\n"ünïcode" = 1\n\n[ mqtt ]\nurl = "mqtt://h"\n'
        "[[ devices ]]\nname = 'm'\ndriver = 'modbus'\nhost = 'h'\nunit = 300\n",
        encoding="utf-8",
    )
    run = check(path, capsys)
    assert run.status == 2
    assert f"{path}:4: gateway.ünïcode: unknown key" in run.err
    assert f"{path}:12: devices[0].unit: 300 is out of range (0..247)" in run.err


def test_check_json_lists_every_problem_with_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stage(CASES / "enum_did_you_mean.toml", tmp_path)
    run = check(path, capsys, "--json")
    assert run.status == 2
    doc = json.loads(run.out)
    assert doc["ok"] is False
    assert [(p["line"], p["key"]) for p in doc["problems"]] == [
        (6, "buffer.durability"),
        (20, "devices[0].points[0].type"),
        (21, "devices[0].points[0].function"),
        (22, "devices[0].points[0].kind"),
    ]
    assert doc["problems"][1]["message"].startswith('"float" is not allowed (did you mean')


def test_check_json_describes_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.toml"
    path.write_text(demo_config(tmp_path, "mqtt://127.0.0.1:1", 5020, None, 9108))
    run = check(path, capsys, "--json")
    assert run.status == 0, run.err
    doc = json.loads(run.out)
    assert doc["ok"] is True
    assert [d["name"] for d in doc["devices"]] == ["eaf-1", "mill-1", "aux-1", "bf-blower"]
    aux = next(d for d in doc["devices"] if d["name"] == "aux-1")
    energy = next(p for p in aux["points"] if p["name"] == "energy_import")
    assert (energy["kind"], energy["unit"], energy["carrier"]) == ("counter", "kWh", "electricity")
    assert energy["where"].startswith("input 72 float32")
    assert "works" in doc["groups"]


def test_check_json_refuses_to_print_a_nan_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nan.toml"
    path.write_text(
        '[gateway]\nid = "gw1"\nsite = "s"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'
        '[[devices]]\nname = "m1"\ndriver = "modbus"\nhost = "127.0.0.1"\n'
        '  [[devices.points]]\n  name = "p"\n  address = 0\n  scale = nan\n',
        encoding="utf-8",
    )
    run = check(path, capsys, "--json")
    assert run.status == 2
    assert "NaN or infinite" in run.err
    assert run.out == ""
