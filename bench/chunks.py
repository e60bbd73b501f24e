"""Long documents in chunks: chunks/s against pgai's chunking vectorizer, and search over chunks.

The corpus is real prose: the docstrings of the packages installed beside the bench (cut
into paragraphs, each paragraph made unique by a ``[doc.paragraph]`` mark so no one gets a
vector for free), laid out as documents of 3,000 to 20,000 tokens. Ours: a config with
``chunk_tokens=512, chunk_overlap=64`` and the default HNSW index on the chunks, run by
``process_embeddings --once`` until the vectors and the index are ready, with its defaults
and with ``--concurrency=2`` (the default until 2026-12-04).
pgai: its recursive character splitter at 2,048 characters with 256 of overlap (about the
same chunks), no index, its defaults and batch 500. Same rows, same fake API at 200 ms.

Search: 100,000 chunks of 384 dims under 10,000 rows, the index built after the load;
``nearest()`` on the rows (best chunk per row) against an exact answer computed here.

    python -m bench.chunks [--docs 2000] [--latency 0.2] [--no-pgai] [--quick]
                           [--vectors distinct|related] [--rounds 3]

Every run is repeated ``--rounds`` times, ours and pgai's interleaved, and the ratios
reported are the medians of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

from django_autoembed.testing.fake_openai import VECTORS

from . import common, pgai_side

HERE = Path(__file__).resolve().parent
TABLE = "benchapp_longdoc"
CHUNKS = "benchapp_longdoc_embedding_chunks"
PGAI_TABLE = "pgai_longdocs"
PACKAGES = (
    "django",
    "numpy",
    "sympy",
    "torch",
    "transformers",
    "scipy",
    "sklearn",
    "pandas",
    "openai",
)


def _cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "django-autoembed" / "bench-prose.json.gz"


def paragraphs() -> list[str]:
    """Prose paragraphs from the docstrings of installed packages (cached after the first run)."""
    cache = _cache()
    if cache.exists():
        return json.loads(gzip.decompress(cache.read_bytes()))
    site = Path(np.__file__).resolve().parent.parent
    out: list[str] = []
    for package in PACKAGES:
        for path in sorted((site / package).rglob("*.py")) if (site / package).exists() else []:
            try:
                tree = ast.parse(path.read_text(errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(
                    node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
                ):
                    continue
                for para in (ast.get_docstring(node) or "").split("\n\n"):
                    text = " ".join(para.split())
                    words = text.split()
                    # prose, not parameter tables or code: long enough, mostly words
                    if len(words) >= 25 and sum(w.isalpha() for w in words) > 0.7 * len(words):
                        out.append(text)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(gzip.compress(json.dumps(out).encode()))
    return out


def corpus(docs: int, seed: int = 7) -> list[tuple[str, str]]:
    """(title, text) documents of 3,000 to 20,000 tokens (about 4 characters a token)."""
    # pgai's worker fails a whole batch on text that spells a special token such as
    # "<|endoftext|>" (tiktoken's default check; ours counts it as ordinary text): such
    # paragraphs (a few from the transformers docstrings) are left out so pgai can run.
    source = [p for p in paragraphs() if "<|" not in p]
    rng = random.Random(seed)
    cursor = rng.randrange(len(source))
    out = []
    for d in range(docs):
        target = rng.randint(3_000, 20_000) * 4
        parts: list[str] = []
        size = 0
        while size < target:
            para = f"[{d}.{len(parts)}] {source[cursor % len(source)]}"
            cursor += 1
            parts.append(para)
            size += len(para) + 2
        out.append((f"Document {d}", "\n\n".join(parts)))
    return out


def load(table: str, docs: list[tuple[str, str]]) -> None:
    common.execute(f"truncate {table} cascade")
    common.purge_queue()
    for start in range(0, len(docs), 100):
        part = docs[start : start + 100]
        common.execute(
            f"insert into {table} (title, content) select * from unnest(%s::text[], %s::text[])",
            [[t for t, _ in part], [c for _, c in part]],
        )


def ours(api, docs: list[tuple[str, str]], latency: float, *options: str) -> dict:
    from bench.backfill import BUILT

    api.reset()
    api.latency = latency
    common.execute("delete from django_autoembed_indexstate")
    load(TABLE, docs)
    run = common.run_process(common.ours_command("--verbosity=1", *options), api, timeout=7200)
    chunks = common.execute(f"select count(*) from {CHUNKS}")[0][0]
    without = common.execute(
        f"select count(*) from {TABLE} t where not exists (select from {CHUNKS} c where "
        "c.parent_id = t.id)"
    )[0][0]
    if run.returncode or without:
        raise RuntimeError(
            f"our worker: exit {run.returncode}, {without} rows without "
            f"chunks\n{run.stderr[-2000:]}"
        )
    built = BUILT.search(run.stderr)
    build = float(built.group(1)) if built else 0.0
    return {
        "chunks": chunks,
        "seconds": run.seconds,
        "chunks_s": chunks / run.seconds,
        # until every vector was stored (the index build comes after, on its own line)
        "vectors_s": run.seconds - build,
        "vector_chunks_s": chunks / (run.seconds - build),
        "docs_s": len(docs) / run.seconds,
        "index_build_s": build if built else None,
        "requests": api.requests,
        "refused_for_limits": api.refused_for_limits,
        "peak_mb": run.peak_mb,
    }


def pgai(side, docs: list[tuple[str, str]], latency: float, batch_size: int | None) -> dict:
    common.execute("select ai.drop_vectorizer(id, drop_all => true) from ai.vectorizer")
    common.execute(
        f"create table if not exists {PGAI_TABLE} (id bigserial primary key, title text, content "
        "text)"
    )
    load(PGAI_TABLE, docs)
    processing = (
        "ai.processing_default()"
        if batch_size is None
        else f"ai.processing_default(batch_size => {batch_size})"
    )
    common.execute(
        f"select ai.create_vectorizer('{PGAI_TABLE}'::regclass, "
        "loading => ai.loading_column('content'), "
        "embedding => ai.embedding_openai('text-embedding-3-small', 1536, "
        "  api_key_name => 'OPENAI_API_KEY', base_url => %s), "
        "chunking => ai.chunking_recursive_character_text_splitter(chunk_size => 2048, "
        "chunk_overlap => 256), "
        "formatting => ai.formatting_python_template('$chunk'), "
        "indexing => ai.indexing_none(), scheduling => ai.scheduling_none(), "
        f"processing => {processing}, destination => "
        f"ai.destination_table('{PGAI_TABLE}_embeddings'))",
        [side.api.base_url],
    )
    side.api.reset()
    side.api.latency = latency
    cmd = [
        str(side.python.parent / "pgai"),
        "vectorizer",
        "worker",
        "--once",
        "-d",
        side.url,
        "--log-level",
        "WARN",
    ]
    run = common.run_process(cmd, side.api, env=side.env, timeout=7200)
    chunks = common.execute(f"select count(*) from {PGAI_TABLE}_embeddings_store")[0][0]
    if run.returncode or not chunks:
        raise RuntimeError(
            f"pgai worker: exit {run.returncode}, {chunks} chunks\n{run.stderr[-2000:]}"
        )
    # pgai builds no index below 100,000 rows; to compare "searchable through an HNSW
    # index" with ours, the same bulk build our worker runs, timed on pgai's chunks.
    common.execute("set maintenance_work_mem = '512MB'")
    started = time.perf_counter()
    common.execute(
        f"create index on {PGAI_TABLE}_embeddings_store using hnsw (embedding vector_cosine_ops)"
    )
    build = time.perf_counter() - started
    return {
        "chunks": chunks,
        "seconds": run.seconds,
        "chunks_s": chunks / run.seconds,
        "docs_s": len(docs) / run.seconds,
        "index_build_s": build,
        "indexed_chunks_s": chunks / (run.seconds + build),
        "requests": side.api.requests,
        "refused_for_limits": side.api.refused_for_limits,
    }


def search(rows: int, per_row: int, queries: int, dims: int = 384) -> dict:
    """p50 and recall@10 of nearest() over chunks, against the exact best-chunk ranking."""
    from django.db import connection
    from pgvector import HalfVector

    from bench.benchapp.models import SearchManual, SearchManualChunk
    from bench.search import make_vectors
    from django_autoembed.declarations import registry
    from django_autoembed.hnsw.indexes import managed_index

    # The distribution of the 100k-row search bench, chunk after chunk, 10 to a row.
    vectors = make_vectors(rows * per_row)
    rng = np.random.default_rng(99)
    index = managed_index(registry.get("benchapp.SearchManual.embedding"))
    common.execute("truncate benchapp_searchmanual cascade")
    common.purge_queue()
    common.execute(f"drop index if exists {index.name}")
    parents = SearchManual.objects.bulk_create(
        [SearchManual(content=f"row {i}") for i in range(rows)], batch_size=5000
    )
    common.purge_queue()
    ids = [p.pk for p in parents]
    batch = []
    for n, vector in enumerate(vectors):
        batch.append(
            SearchManualChunk(
                parent_id=ids[n // per_row],
                number=n % per_row,
                text=f"chunk {n}",
                embedding=HalfVector(vector),
            )
        )
        if len(batch) == 10_000:
            SearchManualChunk.objects.bulk_create(batch)
            batch = []
    if batch:
        SearchManualChunk.objects.bulk_create(batch)
    started = time.perf_counter()
    common.execute("set maintenance_work_mem = '512MB'")
    with connection.schema_editor() as editor:
        editor.add_index(SearchManualChunk, index)
    build = time.perf_counter() - started
    common.execute("analyze benchapp_searchmanual_embedding_chunks")
    owner = np.repeat(np.arange(rows), per_row)
    asked = []
    for _ in range(queries):
        noise = rng.standard_normal(dims).astype(np.float32) / np.sqrt(dims)
        query = vectors[rng.integers(0, len(vectors))] + 0.2 * noise
        best = np.full(rows, -np.inf)
        np.maximum.at(best, owner, vectors @ (query / np.linalg.norm(query)))
        asked.append((query, {ids[i] for i in np.argsort(-best)[:10]}))
    result: dict = {
        "rows": rows,
        "chunks": len(vectors),
        "dims": dims,
        "queries": queries,
        "index_build_s": build,
        "runs": {},
    }
    for ef_search in (None, 100):
        latencies, recalls = [], []
        for query, exact in asked:
            t = time.perf_counter()
            found = SearchManual.objects.nearest(query, ef_search=ef_search).values_list(
                "pk", flat=True
            )
            found = list(found[:10])
            latencies.append(time.perf_counter() - t)
            recalls.append(len(exact & set(found)) / 10)
        latencies.sort()
        result["runs"][str(ef_search or "default")] = {
            "p50_ms": statistics.median(latencies) * 1000,
            "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
            "recall_at_10": statistics.mean(recalls),
        }
    return result


# Ours as installed, and with the old default of two lanes (three since 2026-12-04).
OURS = (("ours", ()), ("ours_concurrency_2", ("--concurrency=2",)))
PGAI = (("pgai_default", None), ("pgai_batch_500", 500))


def run_ingest(results: dict, api, side, docs: list[tuple[str, str]], args) -> None:
    """``args.rounds`` rounds of every run, ours and pgai's interleaved (pgai's first in
    every other round); the ratios are the medians of each round's (the box's speed drifts
    within the hour, for everyone)."""
    rounds: list[dict] = []
    for n in range(args.rounds):
        print(f"round {n + 1} of {args.rounds}")
        rounds.append(one_round(api, side, docs, args, pgai_first=n % 2 == 1))
    results["rounds"] = rounds
    results["medians"] = {
        name: {
            key: statistics.median(r[name][key] for r in rounds)
            for key in ("chunks_s", "vector_chunks_s", "indexed_chunks_s", "seconds")
            if key in rounds[0][name]
        }
        for name in rounds[0]
    }
    if side is None:
        if not args.quick:
            print(f"pgai skipped: {pgai_side.skip_reason or 'not asked for'}")
        return
    summary = {
        "end_to_end": [r["ours"]["chunks_s"] / best(r, "chunks_s") for r in rounds],
        "like_for_like": [r["ours"]["chunks_s"] / best(r, "indexed_chunks_s") for r in rounds],
        "vectors_stored": [r["ours"]["vector_chunks_s"] / best(r, "chunks_s") for r in rounds],
    }
    results["ours_over_pgai_best"] = {k: statistics.median(v) for k, v in summary.items()}
    results["ours_over_pgai_best_per_round"] = summary
    m = results["ours_over_pgai_best"]
    print(
        f"ours / pgai's best, median of {len(rounds)} round(s): end to end "
        f"{m['end_to_end']:.2f}x ({', '.join(f'{x:.2f}' for x in summary['end_to_end'])}), "
        f"like for like {m['like_for_like']:.2f}x, vectors stored {m['vectors_stored']:.2f}x"
    )


def best(round_: dict, key: str) -> float:
    """pgai's best figure of a round for ``key`` (its faster configuration for that measure)."""
    return max(round_[name][key] for name, _ in PGAI)


def one_round(api, side, docs: list[tuple[str, str]], args, *, pgai_first: bool = False) -> dict:
    out: dict = {}
    runs = [("ours", name, options) for name, options in OURS]
    if side is not None:
        theirs = [("pgai", name, batch) for name, batch in PGAI]
        runs = theirs + runs if pgai_first else runs + theirs
    for kind, name, option in runs:
        if kind == "ours":
            out[name] = r = ours(api, docs, args.latency, *option)
            print(
                f"{name} (chunk_tokens 512, overlap 64, HNSW index): {r['chunks']} chunks in "
                f"{r['seconds']:.1f} s = {r['chunks_s']:.0f} chunks/s ({r['docs_s']:.1f} "
                f"docs/s), {r['refused_for_limits']} requests refused; vectors stored in "
                f"{r['vectors_s']:.1f} s ({r['vector_chunks_s']:.0f} chunks/s), then the HNSW "
                f"index build: {r['index_build_s']} s"
            )
        else:
            out[name] = p = pgai(side, docs, args.latency, option)
            print(
                f"{name} (2,048 chars, overlap 256, no index): {p['chunks']} chunks in "
                f"{p['seconds']:.1f} s = {p['chunks_s']:.0f} chunks/s; with an HNSW index "
                f"built on its chunks ({p['index_build_s']:.1f} s): "
                f"{p['indexed_chunks_s']:.0f} chunks/s"
            )
    if side is not None:
        r = out["ours"]
        for name, _ in PGAI:
            p = out[name]
            print(
                f"  ours / {name}: {r['chunks_s'] / p['chunks_s']:.2f}x chunks/s, "
                f"{r['docs_s'] / p['docs_s']:.2f}x docs/s; vectors stored "
                f"{r['vector_chunks_s'] / p['chunks_s']:.2f}x; like for like "
                f"{r['chunks_s'] / p['indexed_chunks_s']:.2f}x; ours at concurrency 2: "
                f"{out['ours_concurrency_2']['chunks_s'] / p['chunks_s']:.2f}x"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--no-pgai", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of ours and pgai's runs, interleaved (--quick: one)",
    )
    parser.add_argument(
        "--vectors",
        choices=sorted(VECTORS),
        default="distinct",
        help="the fake's vectors: all but orthogonal (default), or near for shared wording",
    )
    parser.add_argument("--search-only", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="100 documents, 10,000 chunks searched, no pgai"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.quick:
        args.rounds = 1
    docs = corpus(100 if args.quick else args.docs)
    api = common.setup(args.vectors)
    side = None if args.quick or args.no_pgai else pgai_side.PgaiSide.prepare(api)
    from django_autoembed.providers.openai import encoding

    sizes = [len(encoding().encode_ordinary(text)) for _, text in docs[:: max(1, len(docs) // 50)]]
    results: dict = {
        "machine": common.machine(),
        "latency": args.latency,
        "vectors": args.vectors,
        "docs": len(docs),
        "doc_tokens_sampled": {
            "min": min(sizes),
            "median": statistics.median(sizes),
            "max": max(sizes),
        },
    }
    print(
        f"{len(docs)} documents, tokens per document (sampled): min {min(sizes)}, median "
        f"{statistics.median(sizes):.0f}, max {max(sizes)}"
    )
    if not args.search_only:
        run_ingest(results, api, side, docs, args)
    results["search"] = search(1000 if args.quick else 10_000, 10, 50 if args.quick else 200)
    s = results["search"]
    print(
        f"search over {s['chunks']:,} chunks ({s['dims']} dims) under {s['rows']:,} rows, index "
        f"built in {s['index_build_s']:.1f} s:"
    )
    for ef, run in s["runs"].items():
        print(
            f"  ef_search {ef}: p50 {run['p50_ms']:.1f} ms, p95 {run['p95_ms']:.1f} ms, recall@10 "
            f"{run['recall_at_10']:.3f}"
        )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "chunks.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
