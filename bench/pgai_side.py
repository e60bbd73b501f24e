"""pgai's vectorizer worker, run side by side on the same database, rows and fake API.

pgai lives in its own venv (created here on first use, under the cache
directory), because its worker extra pulls dependencies we do not want in
ours. Its SQL goes into the bench database with ``pgai.install``; the
vectorizer is configured like pgai's published runs (no chunking, no index,
the same "title, blank line, content" text).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from . import common

VERSION = "0.12.1"
TABLE = "pgai_docs"
PLAIN = "pgai_plain"
skip_reason = ""


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "django-autoembed" / f"pgai-{VERSION}-venv"


def ensure_venv() -> Path:
    """The venv's python, installing pgai there first if needed (raises with the reason)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if (venv / "bin" / "pgai").exists():
        return python
    print(f"installing pgai {VERSION} into {venv} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = venv / "constraints.txt"
    # The worker extra pulls torch through docling; the pinned CPU wheel avoids a CUDA download.
    pins.write_text("torch==2.13.0\n")
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(pins),
            "torch==2.13.0",
            f"pgai[vectorizer-worker]=={VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode:
        raise RuntimeError(
            f"pip install pgai[vectorizer-worker]=={VERSION} failed: {result.stderr.strip()[-300:]}"
        )
    return python


class PgaiSide:
    def __init__(self, api, python: Path) -> None:
        self.api = api
        self.python = python
        self.url = common.db_url()
        package = subprocess.run(
            [str(python), "-c", "import pgai, os; print(os.path.dirname(pgai.__file__))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.env = {
            "OPENAI_API_KEY": "bench-key",
            # pgai ships tiktoken's files; without this it tries to download them.
            "TIKTOKEN_CACHE_DIR": str(Path(package) / "vectorizer" / "tiktoken_cache"),
        }

    @classmethod
    def prepare(cls, api) -> PgaiSide | None:
        global skip_reason
        try:
            python = ensure_venv()
            side = cls(api, python)
            subprocess.run(
                [str(python), "-c", "import pgai, sys; pgai.install(sys.argv[1])", side.url],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, **side.env},
            )
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            skip_reason = f"pgai {VERSION} unavailable: {str(detail).strip()[-300:]}"
            return None
        common.execute(
            f"create table if not exists {TABLE} (id bigserial primary key, title text, content "
            "text)"
        )
        common.execute(
            f"create table if not exists {PLAIN} (id bigserial primary key, title text, content "
            "text)"
        )
        return side

    def _reset(self) -> None:
        common.execute("select ai.drop_vectorizer(id, drop_all => true) from ai.vectorizer")
        common.execute(f"truncate {TABLE}")

    def _create_vectorizer(self, batch_size: int | None, dimensions: int = 1536) -> None:
        processing = (
            "ai.processing_default()"
            if batch_size is None
            else f"ai.processing_default(batch_size => {int(batch_size)})"
        )
        common.execute(
            f"select ai.create_vectorizer('{TABLE}'::regclass, "
            "loading => ai.loading_column('content'), "
            f"embedding => ai.embedding_openai('text-embedding-3-small', {int(dimensions)}, "
            "  api_key_name => 'OPENAI_API_KEY', base_url => %s), "
            "chunking => ai.chunking_none(), "
            "formatting => ai.formatting_python_template(E'$title\\n\\n$chunk'), "
            "indexing => ai.indexing_none(), scheduling => ai.scheduling_none(), "
            f"processing => {processing}, "
            f"destination => ai.destination_table('{TABLE}_embeddings'))",
            [self.api.base_url],
        )

    def run(
        self, rows: int, latency: float, *, batch_size: int | None, dimensions: int = 1536
    ) -> dict:
        self._reset()
        common.load(TABLE, rows)
        self._create_vectorizer(batch_size, dimensions)  # queues the existing rows
        self.api.reset()
        self.api.latency = latency
        cmd = [
            str(self.python.parent / "pgai"),
            "vectorizer",
            "worker",
            "--once",
            "-d",
            self.url,
            "--log-level",
            "WARN",
        ]
        run = common.run_process(cmd, self.api, env=self.env)
        stored = common.execute(f"select count(*) from {TABLE}_embeddings_store")[0][0]
        if run.returncode or stored != rows:
            raise RuntimeError(
                f"pgai worker: exit {run.returncode}, {stored}/{rows} rows "
                f"stored\n{run.stderr[-2000:]}"
            )
        return {
            "rows_s": rows / run.seconds,
            "seconds": run.seconds,
            "peak_mb": run.peak_mb,
            "cpu_s": run.cpu_seconds,
            "requests": self.api.requests,
        }

    def insert_overhead(self, rows: int, runs: int = 3) -> dict:
        """One ``rows``-row INSERT with pgai's queue trigger vs the same table without it."""
        self._reset()
        self._create_vectorizer(None)
        queue = common.execute("select queue_schema || '.' || queue_table from ai.vectorizer")[0][0]
        times: dict[str, list[float]] = {TABLE: [], PLAIN: []}
        for i in range(runs):
            for table in (TABLE, PLAIN) if i % 2 == 0 else (PLAIN, TABLE):
                common.execute(f"truncate {queue}")
                times[table].append(common.load(table, rows))
        pgai_s, plain_s = statistics.median(times[TABLE]), statistics.median(times[PLAIN])
        self._reset()
        return {
            "rows": rows,
            "pgai_ms": pgai_s * 1000,
            "plain_ms": plain_s * 1000,
            "ratio": pgai_s / plain_s,
        }
