"""The README's demo: migrate, add a few documents, embed them, search by meaning."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from example_project.documents.models import Document  # noqa: E402

SAMPLES = [
    (
        "Vector databases",
        "pgvector stores embeddings in Postgres columns and finds nearest neighbours with HNSW "
        "indexes.",
    ),
    ("Sourdough bread", "A starter of flour and water ferments for days before it leavens a loaf."),
    ("Trail running", "Running on mountain paths builds ankle strength and needs grippy shoes."),
    (
        "Django migrations",
        "makemigrations turns model changes into Python files that migrate applies to a database.",
    ),
    ("Coffee brewing", "Pour-over coffee depends on grind size, water temperature and patience."),
]


def main() -> None:
    call_command("migrate", verbosity=0)
    for title, content in SAMPLES:
        Document.objects.get_or_create(title=title, defaults={"content": content})
    provider = settings.AUTOEMBED["PROVIDER"]
    print(
        f"Embedding {Document.objects.filter(embedding__isnull=True).count()} documents with the "
        f"{provider!r} provider ({settings.AUTOEMBED['MODEL']}) ..."
    )
    call_command("process_embeddings", once=True, verbosity=0)
    query = sys.argv[1] if len(sys.argv) > 1 else "how do databases store vectors?"
    print(f"\nsemantic_search({query!r}):")
    results = list(Document.objects.semantic_search(query, k=3))
    for doc in results:
        print(f"  {doc.distance:.3f}  {doc.title}")
    if not results:
        sys.exit(
            "No search results: the documents were not embedded. Run with "
            "AUTOEMBED_LOG_LEVEL=INFO to see why."
        )


if __name__ == "__main__":
    main()
