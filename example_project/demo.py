"""`make demo`: Python's own reference topics, stored in chunks, embedded, then searched.

    python example_project/demo.py ["your question"]

It migrates, loads the topics ``help()`` shows (they ship with Python), embeds them with
the local model (or OpenAI, with OPENAI_API_KEY set) and prints the best documents for a
few questions, each with the passage (chunk) that matched. Run it again: nothing is loaded
or embedded twice.
"""

import io
import os
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from example_project.documents.corpus import load_python_topics  # noqa: E402
from example_project.documents.models import Document, DocumentChunk  # noqa: E402

QUESTIONS = [
    "how does Python decide which scope a name belongs to?",
    "make a class behave like a container you can index",
]
# An exact name that a search by meaning alone ranks poorly: hybrid search finds the words.
WORDS = "__slots__"


def main() -> None:
    call_command("migrate", verbosity=0)
    # Rows an earlier version of the demo stored before chunks have none: queue them.
    call_command("process_embeddings", once=True, backfill=True, verbosity=0, stdout=io.StringIO())
    added = load_python_topics()
    print(f"Loaded {added} new Python reference topics ({Document.objects.count()} in all).")
    embed()
    if len(sys.argv) > 1:
        show_semantic(sys.argv[1])
        show_hybrid(sys.argv[1])
    else:
        for question in QUESTIONS:
            show_semantic(question)
        show_hybrid(WORDS)
    print("\nThe same in a browser: python manage.py runserver, then http://127.0.0.1:8000/")


def embed() -> None:
    conf = settings.AUTOEMBED
    print(f"Embedding with the {conf['PROVIDER']!r} provider ({conf['MODEL']}, 384 dimensions)...")
    started = time.monotonic()
    call_command("process_embeddings", once=True, verbosity=0)
    embedded = Document.objects.filter(embedding_chunks__isnull=False).distinct().count()
    print(
        f"{embedded} of {Document.objects.count()} documents embedded, in "
        f"{DocumentChunk.objects.count()} chunks ({time.monotonic() - started:.1f} s)."
    )
    if not embedded:
        sys.exit(
            "Nothing was embedded. Run with AUTOEMBED_LOG_LEVEL=INFO to see why, or "
            "`python manage.py autoembed_status`."
        )


def show_semantic(query: str) -> None:
    print(f"\nsemantic_search({query!r}):  distance, document, best chunk")
    for doc in Document.objects.semantic_search(query, k=3):
        print(f"  {doc.distance:.3f}  {doc.title}  (chunk {doc.chunk_number})")
        print(snippet(doc.chunk_text))


def show_hybrid(query: str) -> None:
    print(f"\nhybrid_search({query!r}):  score, document, rank by meaning and by words")
    for doc in Document.objects.hybrid_search(query, k=3):
        ranks = f"meaning #{doc.vector_rank or '-'}, words #{doc.text_rank or '-'}"
        print(f"  {doc.score:.4f}  {doc.title}  ({ranks}; chunk {doc.chunk_number})")
        print(snippet(doc.chunk_text))


def snippet(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return textwrap.indent(textwrap.shorten(flat, width, placeholder=" ..."), " " * 9)


if __name__ == "__main__":
    main()
