"""The `ironwatt` command line: global options go before or after the command."""

from __future__ import annotations

import pytest

from gateway.cli.main import build_parser


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["check", "-c", "x.toml"], "info"),  # the default
        (["--log-level", "debug", "check", "-c", "x.toml"], "debug"),
        (["check", "--log-level", "debug", "-c", "x.toml"], "debug"),
        (["--log-level", "error", "check", "-c", "x.toml", "--log-level", "warning"], "warning"),
        (["modbus", "read", "127.0.0.1", "--address", "0", "--log-level", "debug"], "debug"),
        (["buffer", "verify", "--log-level", "error"], "error"),
    ],
)
def test_log_level_before_or_after_the_command(argv: list[str], level: str) -> None:
    args = build_parser().parse_args(argv)
    assert args.log_level == level


def test_a_bad_level_after_the_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["check", "--log-level", "loud"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def test_the_daemon_keeps_its_own_option() -> None:
    """`ironwatt run --log-level` is the daemon's own (it overrides the global one)."""
    args = build_parser("run").parse_args(["run", "--log-level", "warning"])
    assert args.run_log_level == "warning"
    assert args.log_level == "info"
