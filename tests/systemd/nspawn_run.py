#!/usr/bin/env python3
"""`make test-systemd`: the documented install under a real systemd (Debian 12, systemd 252).

Boots a debootstrapped bookworm tree in systemd-nspawn (--keep-unit --register=no, since PID 1 of
these machines is not systemd; --private-network), drives it with nsenter, runs the install lines
of docs/daemon.md as written and checks what plant IT relies on in the first hour. Root only.
Standard library only: it runs with any python3 >= 3.11 of the host.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# What the tree needs: systemd as PID 1, Python for the venv the docs create, a broker and its
# clients for the uplink, ps for the checks.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libnss-systemd",
    "python3",
    "python3-venv",
    "mosquitto",
    "mosquitto-clients",
    "procps",
)
SRC = "/root/ironwatt"  # the copy of the repository the install lines run in
CONFIG = "/etc/ironwatt/ironwatt.toml"
UNIT = "ironwatt"
MQTT_USER = "gw-test"
TOPIC = f"ironwatt/plant1/{MQTT_USER}/status"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Failed(AssertionError):
    pass


def say(text: str) -> None:
    print(text, flush=True)


def expect(ok: object, what: str) -> None:
    if not ok:
        raise Failed(what)


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, every: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise Failed(f"timed out after {timeout:g} s waiting for {what}")


# -- the host: tools, the cached tree, the wheels ----------------------------------------------


def ensure_host_tools() -> None:
    if os.geteuid() != 0:
        raise SystemExit("test-systemd needs root (debootstrap, systemd-nspawn, nsenter)")
    missing = [t for t in ("debootstrap", "systemd-nspawn", "nsenter") if shutil.which(t) is None]
    if not missing:
        return
    package = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container"}
    packages = sorted({package.get(tool, "util-linux") for tool in missing})
    if shutil.which("apt-get") is None:
        raise SystemExit(f"missing {', '.join(missing)}: install {' '.join(packages)}")
    say(f"installing {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def debian_mirror() -> str:
    """The Debian mirror apt already uses for bookworm ($IRONWATT_DEBIAN_MIRROR wins)."""
    if os.environ.get("IRONWATT_DEBIAN_MIRROR"):
        return os.environ["IRONWATT_DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        text = path.read_text(errors="replace")
        if path.name.endswith(".sources"):
            for block in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", block, re.M))
                suites, types = fields.get("Suites", "").split(), fields.get("Types", "deb")
                if SUITE in suites and fields.get("URIs") and "deb" in types.split():
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    raise SystemExit(f"no apt source for {SUITE} found; set IRONWATT_DEBIAN_MIRROR")


def base_tree(cache: Path) -> Path:
    """The debootstrapped tree, built once per package list."""
    key = hashlib.sha256(f"{SUITE} minbase {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    tree = cache / f"{SUITE}-{key}"
    if (tree / ".complete").exists():
        say(f"tree: cached {tree}")
        return tree
    building = cache / f"{tree.name}.partial"
    shutil.rmtree(building, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    say(f"tree: debootstrap {SUITE} from apt's mirror into {building}")
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(building),
            mirror,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (building / ".complete").write_text(" ".join(PACKAGES) + "\n")
    building.rename(tree)
    return tree


def _source_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    return sorted(f for f in out.decode().split("\0") if f and (REPO / f).is_file())


def wheels(cache: Path, python: str) -> Path:
    """ironwatt's wheel (built from the working tree, cached by its content) and its
    dependencies' (cached by the dependency list), in one folder."""
    files = _source_files()
    digest = hashlib.sha256()
    packaged = ("gateway/", "drivers/", "ext/", "pyproject.toml", "setup.py", "README.md")
    for name in files:
        if name.startswith(packaged):
            digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    own = cache / "wheels" / f"ironwatt-{digest.hexdigest()[:12]}"
    if not any(own.glob("ironwatt-*.whl")):
        stage = cache / "wheels" / "src"
        shutil.rmtree(stage, ignore_errors=True)
        for name in files:
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, stage / name)
        say("wheels: building ironwatt from the working tree")
        subprocess.run(
            [python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(own), str(stage)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(stage, ignore_errors=True)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    deps_key = hashlib.sha256("\n".join(requires).encode()).hexdigest()[:12]
    deps = cache / "wheels" / f"deps-{deps_key}"
    if not (deps / ".complete").exists():
        say("wheels: collecting the dependencies")
        subprocess.run(
            [python, "-m", "pip", "wheel", "-q", "-w", str(deps), *requires],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (deps / ".complete").write_text("\n".join(requires) + "\n")
    folder = cache / "wheels" / "current"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for wheel in [*own.glob("*.whl"), *deps.glob("*.whl")]:
        shutil.copy2(wheel, folder / wheel.name)
    return folder


# -- the container ------------------------------------------------------------------------------


class Container:
    """One booted tree: systemd-nspawn in the background, commands run through nsenter."""

    def __init__(self, root: Path, logs: Path) -> None:
        self.root = root
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.boots = 0

    def boot(self, timeout: float = 90.0) -> float:
        self.boots += 1
        log = (self.logs / f"nspawn-boot{self.boots}.log").open("wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--quiet",
                "--keep-unit",
                "--register=no",
                "--private-network",
                "--console=pipe",
                "--machine=ironwatt-test",
                "-D",
                str(self.root),
                "--boot",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def leader() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise Failed(
                    f"systemd-nspawn exited with {self.proc.returncode}: "
                    + (self.logs / f"nspawn-boot{self.boots}.log").read_text()
                )
            self.leader = _child_of(self.proc.pid)
            return self.leader != 0

        wait_for(leader, 20, "the container's PID 1", every=0.1)

        def up() -> bool:
            state = self.sh("systemctl is-system-running", check=False, timeout=10).stdout.strip()
            return state in ("running", "degraded")

        wait_for(up, timeout, "the container's systemd to finish booting")
        return time.monotonic() - started

    def sh(
        self,
        command: str,
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        cwd: str = "/root",
    ) -> subprocess.CompletedProcess[str]:
        env = [
            "env",
            "-i",
            f"PATH={PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            "SYSTEMD_PAGER=",
            "SYSTEMD_COLORS=0",
            "TERM=dumb",
        ]
        argv = ["nsenter", "-t", str(self.leader), "-a", *env, "sh", "-c", f"cd {cwd} && {command}"]
        done = subprocess.run(
            argv,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise Failed(
                f"`{command}` exited {done.returncode}\n{done.stdout}{done.stderr}".rstrip()
            )
        return done

    def prop(self, name: str, unit: str = UNIT) -> str:
        return self.sh(f"systemctl show -P {name} {unit}").stdout.strip()

    def cursor(self) -> str:
        """A point in the journal: the wall clock, shared with the container (journalctl's
        --after-cursor missed PID 1's lines written right after the cursor was taken)."""
        return f"@{time.time():.6f}"

    def journal(self, since: str = "", unit: str = UNIT) -> str:
        after = f"--since={since}" if since else ""
        return self.sh(f"journalctl -u {unit} {after} -o short-monotonic --no-pager -q").stdout

    def poweroff(self, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.sh("systemctl poweroff", check=False, timeout=10)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container to power off
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _child_of(pid: int) -> int:
    """The container's PID 1: systemd, a child of systemd-nspawn."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if int(rest.split()[1]) == pid and comm == "systemd":
            return int(entry.name)
    return 0


# -- the install, as docs/daemon.md writes it ---------------------------------------------------


def install_lines() -> list[str]:
    """The first code block of "## Running under systemd" in docs/daemon.md."""
    text = (REPO / "docs" / "daemon.md").read_text()
    section = text[text.index("## Running under systemd") :]
    block = re.search(r"```\n(.*?)```", section, re.S)
    expect(block, "docs/daemon.md has no install block")
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def edit_config(text: str, meter_port: int, devices: int = 1, broken: bool = False) -> str:
    """What a technician types into the lines marked EDIT: this container's broker and meter."""
    edits = {
        "id": f'"{MQTT_USER}"',
        "site": '"plant1"',
        "url": '"mqtt://127.0.0.1:1883"',
        "username": f'"{MQTT_USER}"',
        "host": '"127.0.0.1"',
        "port": str(meter_port),
    }
    for key, value in edits.items():
        text, n = re.subn(rf"^{key}\s*=\s*[^#\n]*", f"{key} = {value}  ", text, count=1, flags=re.M)
        expect(n == 1, f"systemd/ironwatt.toml has no {key} line")
    for unit in range(2, devices + 1):
        text += (
            f'\n[[devices]]\nname = "meter-{unit}"\ndriver = "modbus"\nhost = "127.0.0.1"\n'
            f'port = {meter_port}\nunit = {unit}\npoll = "1s"\nprofile = "eastron-sdm630"\n'
        )
    if broken:
        text += '\n[[devices]]\nname = "meter-9"\ndriver = "modbus"\nhost = "127.0.0.1"\n'
        text += 'poll = "fast"\n'
    return text


# -- the test -----------------------------------------------------------------------------------


class Run:
    def __init__(self, c: Container, meter_port: int = 5020) -> None:
        self.c = c
        self.meter_port = meter_port
        self.password = secrets.token_hex(12)
        self.report: list[str] = []
        self.template = ""

    def note(self, text: str) -> None:
        say(f"   {text}")
        self.report.append(text)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        say(f"== {name}")
        yield
        say(f"   ok ({time.monotonic() - started:.1f} s)")

    def write_config(self, devices: int = 1, broken: bool = False) -> None:
        text = edit_config(self.template, self.meter_port, devices, broken)
        self.c.sh(f"cat > {CONFIG}", input=text)

    def status_doc(self) -> dict[str, object]:
        """The retained status message on the broker (what the uplink published last)."""
        out = self.c.sh(
            f"mosquitto_sub -h 127.0.0.1 -u {MQTT_USER} -P {self.password} -t {TOPIC} "
            "-C 1 -W 5 -i status-check",
            check=False,
        ).stdout
        try:
            doc = json.loads(out)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def state(self) -> object:
        return self.status_doc().get("state")

    def broker(self) -> None:
        c = self.c
        c.sh(
            f"mosquitto_passwd -c -b /etc/mosquitto/ironwatt-test.passwd {MQTT_USER} "
            f"{self.password} && chown mosquitto: /etc/mosquitto/ironwatt-test.passwd "
            "&& chmod 600 /etc/mosquitto/ironwatt-test.passwd"
        )
        c.sh(
            "cat > /etc/mosquitto/conf.d/ironwatt-test.conf",
            input="listener 1883 127.0.0.1\nallow_anonymous false\n"
            "password_file /etc/mosquitto/ironwatt-test.passwd\n",
        )
        c.sh("systemctl restart mosquitto")

    def install(self) -> None:
        """docs/daemon.md's lines, one by one; the config edited where the docs say so."""
        c = self.c
        for line in install_lines():
            command = line.split("  #", 1)[0].strip()
            stdin = self.password + "\n" if "/dev/stdin" in command else None
            started = time.monotonic()
            done = c.sh(command, input=stdin, check=False, cwd=SRC, timeout=300)
            took = time.monotonic() - started
            say(f"   $ {command}  [{done.returncode}, {took:.1f} s]")
            if done.returncode != 0:
                raise Failed(
                    f"the documented `{command}` failed ({done.returncode}):\n"
                    f"{done.stdout}{done.stderr}"
                )
            if command.startswith("ironwatt check"):
                self.note(
                    "ironwatt check before the first start: "
                    + _first(done.stderr, "will be provided by systemd")
                )
                expect("will be provided by systemd" in done.stderr, "check's credential note")
            if "edit it" in line:
                self.template = c.sh(f"cat {CONFIG}").stdout
                self.simulated_meters()
                self.write_config()
            if command.startswith("systemctl daemon-reload && systemctl enable --now"):
                self.note(f"systemctl enable --now returned after {took:.2f} s")

    def simulated_meters(self) -> None:
        """Two Modbus meters for the gateway to poll (units 1 and 2), a unit of their own."""
        self.c.sh(
            "systemd-run --unit=sim-meters /opt/ironwatt/bin/python -m "
            f"gateway.sim.modbus_meters --port {self.meter_port} --units 1-2"
        )

    def started(self) -> None:
        c = self.c
        expect(c.prop("ActiveState") == "active", "ironwatt active after enable --now")
        begin = int(c.prop("ExecMainStartTimestampMonotonic"))
        ready = int(c.prop("ActiveEnterTimestampMonotonic"))
        self.note(f"READY {(ready - begin) / 1e6:.2f} s after the process started")
        expect(0 < ready - begin < 10_000_000, "READY within 10 s")
        pid = c.prop("MainPID")
        user = c.sh(f"ps -o user=,uid= -p {pid}").stdout.split()
        self.note(f"main process {pid} runs as {user[0]} (uid {user[1]}, a DynamicUser)")
        expect(user[0] == "ironwatt" and 61184 <= int(user[1]) <= 65519, "the dynamic user")
        modes = c.sh(
            "stat -c '%a %U %n' /etc/ironwatt /etc/ironwatt/ironwatt.toml "
            "/etc/ironwatt/credentials /etc/ironwatt/credentials/mqtt-password"
        ).stdout
        self.note("files: " + "; ".join(modes.split("\n")[:-1]))
        journal = c.journal()
        expect("Permission denied" not in journal, f"no Permission denied:\n{journal}")
        wait_for(lambda: self.state() == "online", 20, "the retained online status")
        self.note(f"the broker accepted {MQTT_USER} with the credential: retained status online")
        wait_for(lambda: "1/1 devices up" in c.prop("StatusText"), 25, "STATUS= 1/1 devices up")
        self.note(f"Status: {c.prop('StatusText')!r}")
        first = c.prop("WatchdogTimestampMonotonic")
        wait_for(lambda: c.prop("WatchdogTimestampMonotonic") != first, 20, "a WATCHDOG=1 ping")
        self.note("WATCHDOG=1 pings arrive (WatchdogTimestamp moves)")
        table = c.sh("ironwatt status").stdout
        expect(re.search(r"^meter-1\s+modbus\s+up", table, re.M), f"ironwatt status:\n{table}")
        self.note("journal: " + " | ".join(_lines(journal, r"Start|running:|MQTT connected")))

    def reloads(self) -> None:
        c = self.c
        pid = c.prop("MainPID")
        # Applied: a second meter; systemctl reload returns 0 once the gateway has taken it.
        mark = c.cursor()
        self.write_config(devices=2)
        done = c.sh("systemctl reload ironwatt", check=False)
        expect(done.returncode == 0, f"good reload: {done.stderr}")
        status = c.prop("StatusText")
        expect(status.startswith("config reloaded: added ['meter-2']"), f"Status: {status}")
        self.note(f"good reload: systemctl reload exit 0, Status: {status!r}")
        wait_for(
            lambda: "config reloaded: added ['meter-2']" in c.journal(mark),
            10,
            "the applied reload in the journal",
        )
        # Refused, twice within the minute: both fail, both are in the journal.
        self.write_config(devices=2, broken=True)
        for attempt in (1, 2):
            mark = c.cursor()
            done = c.sh("systemctl reload ironwatt", check=False)
            expect(done.returncode != 0, "a broken reload must fail")
            status = c.prop("StatusText")
            expect(status.startswith("reload refused: ") and "poll" in status, f"Status: {status}")
            refusal_logged = partial(lambda m: "config reload refused" in c.journal(m), mark)
            wait_for(refusal_logged, 10, f"refusal {attempt} in the journal")
            journal = c.journal(mark)
            if attempt == 1:
                self.note(
                    f"broken reload: systemctl reload exit {done.returncode}: "
                    f"{done.stderr.strip().splitlines()[0]}"
                )
                shown = c.sh("systemctl status --no-pager -n 0 ironwatt", check=False).stdout
                self.note(
                    "  systemctl status: "
                    + " | ".join(
                        ln.strip()
                        for ln in shown.splitlines()
                        if re.match(r"\s*(Active|Status):", ln)
                    )
                )
                self.note("  journal: " + " | ".join(_lines(journal, r"refused|failed|devices\[")))
            expect(
                c.prop("ActiveState") == "active" and c.prop("MainPID") == pid,
                "the gateway keeps running after a refused reload",
            )
        self.note("second broken reload within the minute: refused and logged again")
        expect(self.state() == "online", "still online on the old config")
        # Applied again (meter-2 removed), then once more unchanged: both lines in the journal.
        mark = c.cursor()
        self.write_config(devices=1)
        for _ in range(2):
            done = c.sh("systemctl reload ironwatt", check=False)
            expect(done.returncode == 0, f"good reload: {done.stderr}")
        wait_for(
            lambda: c.journal(mark).count("INFO ironwatt.runtime: config reloaded:") == 2,
            10,
            "two applied reloads in the journal",
        )
        expect("last reload refused" not in c.prop("StatusText"), "the refusal note is cleared")
        by_hand = c.sh("ironwatt reload")  # a root shell reaches the service user's socket too
        self.note(f"ironwatt reload from a root shell: {by_hand.stdout.strip()}")
        self.note("two good reloads in a row: both logged (no repeat filter on reloads)")

    def watchdog(self) -> None:
        c = self.c
        pid = c.prop("MainPID")
        restarts = int(c.prop("NRestarts"))
        mark = c.cursor()
        started = time.monotonic()
        c.sh(f"kill -STOP {pid}")
        wait_for(
            lambda: c.prop("MainPID") not in ("0", pid) and c.prop("ActiveState") == "active",
            75,
            "the watchdog to kill and restart the stopped process",
        )
        took = time.monotonic() - started
        expect(int(c.prop("NRestarts")) == restarts + 1, "one restart")
        journal = c.journal(mark)
        expect("Watchdog timeout" in journal, f"a watchdog timeout in the journal:\n{journal}")
        self.note(
            f"watchdog: SIGSTOP -> killed and restarted in {took:.0f} s (NRestarts {restarts + 1})"
        )
        self.note(
            "  journal: "
            + " | ".join(
                _lines(
                    journal,
                    r"[Ww]atchdog|Main process exited|"
                    r"Scheduled restart|Started",
                )
            )
        )
        wait_for(lambda: self.state() == "online", 20, "online again after the restart")

    def refused_at_start(self) -> None:
        c = self.c
        c.sh("systemctl stop ironwatt")
        self.write_config(broken=True)
        mark = c.cursor()
        done = c.sh("systemctl start ironwatt", check=False)
        expect(done.returncode != 0, "a refused config fails the start")
        time.sleep(12)  # RestartSec=5s: a loop would have restarted twice by now
        state, restarts = c.prop("ActiveState"), c.prop("NRestarts")
        status, result = c.prop("ExecMainStatus"), c.prop("Result")
        journal = c.journal(mark)
        starts = journal.count("Starting ironwatt")
        expect(
            state == "failed"
            and status == "2"
            and starts == 1
            and "Scheduled restart job" not in journal,
            f"no restart loop: {state}, status {status}, {starts} starts:\n{journal}",
        )
        self.note(
            f"refused config at start: {state} ({result}, exit status {status}), "
            f"started once, no restart scheduled in 12 s (NRestarts={restarts})"
        )
        self.note("  journal: " + " | ".join(_lines(journal, r"devices\[|problem|Failed|failed")))
        self.write_config()
        c.sh("systemctl reset-failed ironwatt && systemctl start ironwatt")
        wait_for(lambda: self.state() == "online", 20, "online after the fix")

    def stop(self) -> None:
        c = self.c
        started = time.monotonic()
        mark = c.cursor()
        c.sh("systemctl stop ironwatt")
        took = time.monotonic() - started
        begin = int(c.prop("ActiveExitTimestampMonotonic"))
        end = int(c.prop("InactiveEnterTimestampMonotonic"))
        expect(c.prop("Result") == "success" and c.prop("ExecMainStatus") == "0", "a clean stop")
        self.note(
            f"stop: {(end - begin) / 1e6:.3f} s in systemd (systemctl stop returned after "
            f"{took:.2f} s), exit 0"
        )
        expect(self.state() == "offline", "the retained offline status after the stop")
        self.note(
            "  the retained status is offline; journal: "
            + " | ".join(_lines(c.journal(mark), r"[Ss]topp|Deactivated|ended"))
        )

    def kill_mode(self) -> None:
        """The syscall filter in kill mode (SIGSYS instead of EPERM): start, reload, stop."""
        c = self.c
        c.sh(
            "mkdir -p /etc/systemd/system/ironwatt.service.d && printf '[Service]\\n"
            "SystemCallErrorNumber=\\n' > /etc/systemd/system/ironwatt.service.d/zz-kill.conf "
            "&& systemctl daemon-reload && systemctl start ironwatt"
        )
        mark = c.cursor()
        wait_for(lambda: self.state() == "online", 20, "online in kill mode")
        time.sleep(3)
        c.sh("systemctl reload ironwatt")
        c.sh("systemctl stop ironwatt")
        result, code = c.prop("Result"), c.prop("ExecMainCode")
        journal = c.journal(mark)
        expect(
            result == "success"
            and "31/SYS" not in journal
            and "Main process exited" not in journal.replace("code=exited, status=0/SUCCESS", ""),
            f"kill mode: {result} (code {code}): a filtered syscall?\n{journal}",
        )
        c.sh("rm /etc/systemd/system/ironwatt.service.d/zz-kill.conf && systemctl daemon-reload")
        self.note(
            "syscall filter in kill mode: start, reload, stop with Result=success (no SIGSYS)"
        )

    def at_boot(self, boot_time: float) -> None:
        c = self.c
        expect(c.prop("UnitFileState") == "enabled", "still enabled")
        wait_for(lambda: c.prop("ActiveState") == "active", 30, "ironwatt active after boot")
        wait_for(lambda: self.state() == "online", 30, "online after boot")
        self.note(
            f"boot: the container was up in {boot_time:.1f} s, ironwatt active "
            f"({c.prop('StatusText')!r})"
        )
        out = c.sh("systemd-analyze security --no-pager ironwatt").stdout
        match = re.search(r"Overall exposure level for ironwatt\.service: ([0-9.]+)", out)
        expect(match, f"systemd-analyze security:\n{out}")
        assert match is not None
        score = float(match.group(1))
        self.note(f"systemd-analyze security ironwatt: {score}")
        expect(score <= 2.0, "exposure <= 2.0")
        verify = c.sh("systemd-analyze verify /etc/systemd/system/ironwatt.service", check=False)
        self.note(
            "systemd-analyze verify: "
            + ((verify.stdout + verify.stderr).strip() or "no complaints")
        )


def _lines(journal: str, pattern: str, limit: int = 8) -> list[str]:
    found = [
        ln.split(": ", 1)[-1] if "]: " in ln else ln
        for ln in journal.splitlines()
        if re.search(pattern, ln)
    ]
    return found[:limit]


def _first(text: str, needle: str) -> str:
    return next((ln for ln in text.splitlines() if needle in ln), text.strip()[:200])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("IRONWATT_SYSTEMD_CACHE", "/var/cache/ironwatt-systemd-test")),
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's tree")
    parser.add_argument("--python", default=sys.executable, help="builds the wheels")
    args = parser.parse_args()
    t0 = time.monotonic()
    ensure_host_tools()
    tree = base_tree(args.cache)
    folder = wheels(args.cache, args.python)
    say(f"prepared in {time.monotonic() - t0:.0f} s")
    run_root = args.cache / "run"
    logs = args.cache / "last-run"
    shutil.rmtree(run_root, ignore_errors=True)
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(tree), str(run_root)], check=True)
    src = run_root / SRC.lstrip("/")
    for name in _source_files():
        if name.startswith(("systemd/", "docs/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(folder, src / "wheels")
    c = Container(run_root, logs)
    run = Run(c)
    ok = False
    try:
        with run.step("boot 1"):
            run.note(
                f"container booted in {c.boot():.1f} s: "
                + c.sh("systemctl --version").stdout.splitlines()[0]
            )
        with run.step("broker (Mosquitto with a password file)"):
            run.broker()
        with run.step("install as docs/daemon.md says"):
            run.install()
        with run.step("started: READY, the dynamic user, its files and credential, watchdog"):
            run.started()
        with run.step("reload: applied, refused twice, applied twice"):
            run.reloads()
        with run.step("watchdog: SIGSTOP"):
            run.watchdog()
        with run.step("a refused config at start does not restart-loop"):
            run.refused_at_start()
        with run.step("stop"):
            run.stop()
        with run.step("syscall filter in kill mode"):
            run.kill_mode()
        with run.step("reboot: the enabled unit starts at boot"):
            (logs / "journal-boot1.txt").write_text(c.journal())
            c.sh("systemctl start ironwatt")  # running at shutdown: stopped by the poweroff
            c.poweroff()
            boot_time = c.boot()
            run.at_boot(boot_time)
        (logs / "journal-boot2.txt").write_text(c.journal())
        ok = True
    except Failed as exc:
        say(f"FAILED: {exc}")
        with contextlib.suppress(Exception):
            (logs / "journal-failed.txt").write_text(c.journal())
            say(
                "journal of ironwatt (last 40 lines):\n" + "\n".join(c.journal().splitlines()[-40:])
            )
    finally:
        c.poweroff()
        if not args.keep:
            shutil.rmtree(run_root, ignore_errors=True)
    say("\n".join(["", "summary:", *(f"  {line}" for line in run.report)]))
    say(f"{'passed' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s (logs: {logs})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
