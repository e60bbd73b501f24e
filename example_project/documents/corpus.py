"""The demo's corpus: the reference topics that ``help()`` shows (``pydoc_data.topics``).

They ship with every Python: 79 topics, from a few hundred bytes to 62 KB, long enough
that a search has to say *where* in a document the answer is.
"""

from pydoc_data.topics import topics

from .models import Document


def python_topics() -> dict[str, str]:
    """Each topic's text by its heading (two keys, "if" and "else", share one text)."""
    found = {}
    for text in topics.values():
        heading, _, rest = text.partition("\n")
        _underline, _, body = rest.partition("\n")
        found[heading.strip()] = body.strip()
    return found


def load_python_topics() -> int:
    """Add the topics that are not loaded yet, in one INSERT; returns how many were added."""
    wanted = python_topics()
    loaded = set(Document.objects.filter(title__in=wanted).values_list("title", flat=True))
    new = [Document(title=title, content=body) for title, body in wanted.items()]
    created = Document.objects.bulk_create([d for d in new if d.title not in loaded])
    return len(created)
