"""A worker that processes like the guide's Edge Function, as the in-run baseline.

Ten batches of ten jobs in flight at once; inside a batch, one row at a time:
read its text through the content function, one embeddings call with one
input, one UPDATE, one ``pgmq.delete``. (The guide's cron tick adds a further
cap of 100 rows per 10 s, which this baseline leaves out in its favour.)
"""

from __future__ import annotations

import threading

import openai
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql

from django_autoembed.worker import connect

from .common import execute, purge_queue

BATCHES = 10
BATCH_SIZE = 10


def queue_one_message_per_row(table: str, function: str, column: str = "embedding") -> None:
    purge_queue()
    execute(
        "select count(*) from pgmq.send_batch('embedding_jobs', (select "
        "array_agg(jsonb_build_object("
        "'id', id, 'schema', 'public', 'table', %s, 'contentFunction', %s, 'embeddingColumn', %s)) "
        f"from {table}))",
        [table, function, column],
    )


def run(base_url: str, table: str, function: str, dimensions: int) -> None:
    """Drain the queue the guide's way (returns when every message is handled)."""
    queue_one_message_per_row(table, function)
    read_text = sql.SQL("select {fn}(t) from {table} t where id = %s").format(
        fn=sql.Identifier(function), table=sql.Identifier(table)
    )
    write = sql.SQL("update {table} set embedding = %s where id = %s").format(
        table=sql.Identifier(table)
    )
    errors: list[BaseException] = []

    def batch_worker() -> None:
        client = openai.OpenAI(base_url=base_url, api_key="bench-key", max_retries=3)
        try:
            with connect() as conn:
                register_vector(conn)
                while True:
                    messages = conn.execute(
                        "select msg_id, message from pgmq.read('embedding_jobs', 300, %s)",
                        [BATCH_SIZE],
                    ).fetchall()
                    if not messages:
                        return
                    for msg_id, job in messages:
                        text = conn.execute(read_text, [job["id"]]).fetchone()[0]
                        vector = (
                            client.embeddings.create(
                                model="text-embedding-3-small", input=text, dimensions=dimensions
                            )
                            .data[0]
                            .embedding
                        )
                        conn.execute(write, [HalfVector(vector), job["id"]])
                        conn.execute("select pgmq.delete('embedding_jobs', %s::bigint)", [msg_id])
        except BaseException as exc:  # surfaced after join
            errors.append(exc)

    threads = [threading.Thread(target=batch_worker) for _ in range(BATCHES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
