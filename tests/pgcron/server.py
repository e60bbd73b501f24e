"""Postgres 17 with pg_cron and pg_net in a debootstrap root, for the push-path tier.

``start(dbname)`` builds the root once (tests/pgcron/build.sh, cached under the
user's cache dir), starts a fresh cluster on 127.0.0.1 with both libraries
preloaded for ``dbname``, creates that database, and stops everything at exit.
Raises ``Unavailable`` with one line of reason where it cannot run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
PG_BIN = "/usr/lib/postgresql/17/bin"
DATA = "/var/lib/autoembed-pg"


class Unavailable(Exception):
    pass


def _root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "django-autoembed" / "pgcron-root"


def _tarball() -> Path:
    found = os.environ.get("AUTOEMBED_PG_NET_TARBALL")
    if found:
        return Path(found)
    vendor = HERE.parent.parent.parent / "shared" / "vendor"
    matches = sorted(vendor.glob("pg_net-*.tar.gz"))
    if not matches:
        raise Unavailable(f"pg_net source tarball not found in {vendor}")
    return matches[-1]


def _run(root: Path, *args: str, user: str | None = "postgres") -> str:
    cmd = ["chroot"] + ([f"--userspec={user}:{user}"] if user else []) + [str(root), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise Unavailable(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-400:]}")
    return result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(dbname: str) -> dict[str, str]:
    """Start the server; returns Django DATABASES keys (HOST, PORT, USER, NAME)."""
    if os.geteuid() != 0 or shutil.which("chroot") is None:
        raise Unavailable("the pg_cron/pg_net tier needs root and chroot")
    root = _root()
    build = subprocess.run(
        ["bash", str(HERE / "build.sh"), str(root), str(_tarball())],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if build.returncode:
        raise Unavailable(f"could not build the Postgres 17 root: {build.stderr.strip()[-300:]}")
    mounted: list[Path] = []
    for target, args in (("proc", ["-t", "proc", "proc"]), ("dev", ["--bind", "/dev"])):
        path = root / target
        if subprocess.run(["mountpoint", "-q", str(path)]).returncode != 0:
            subprocess.run(["mount", *args, str(path)], check=True)
            mounted.append(path)
    data = root / DATA.lstrip("/")
    if data.exists():
        subprocess.run(
            [
                "chroot",
                "--userspec=postgres:postgres",
                str(root),
                f"{PG_BIN}/pg_ctl",
                "-D",
                DATA,
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(data)
    data.mkdir(parents=True)
    shutil.chown(data, *(_ids(root)))
    _run(root, f"{PG_BIN}/initdb", "-D", DATA, "--auth=trust", "-U", "postgres", "--encoding=UTF8")
    port = _free_port()
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\nshared_preload_libraries = 'pg_cron,pg_net'\n"
            f"cron.database_name = '{dbname}'\ncron.use_background_workers = on\n"
            f"pg_net.database_name = '{dbname}'\nmax_worker_processes = 20\n"
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '/tmp'\n"
            "fsync = off\nlog_min_messages = warning\n"
        )
    _run(root, f"{PG_BIN}/pg_ctl", "-D", DATA, "-l", f"{DATA}/log", "-w", "start")

    def stop() -> None:
        subprocess.run(
            [
                "chroot",
                "--userspec=postgres:postgres",
                str(root),
                f"{PG_BIN}/pg_ctl",
                "-D",
                DATA,
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            capture_output=True,
        )
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)

    atexit.register(stop)
    _run(
        root,
        f"{PG_BIN}/psql",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-c",
        f'create database "{dbname}"',
    )
    return {"HOST": "127.0.0.1", "PORT": str(port), "USER": "postgres", "NAME": dbname}


def _ids(root: Path) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "postgres":
            return int(fields[2]), int(fields[3])
    raise Unavailable("no postgres user in the root")
