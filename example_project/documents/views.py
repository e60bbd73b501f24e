from typing import Any

from django import forms
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from django_autoembed.exceptions import AutoembedError
from django_autoembed.status import collect

from .models import Document


class DocumentForm(forms.ModelForm):
    class Meta:
        model = Document
        fields = ["title", "content"]
        widgets = {
            "title": forms.TextInput(attrs={"size": 60}),
            "content": forms.Textarea(attrs={"rows": 4, "cols": 60}),
        }


def embedding_status() -> dict[str, Any]:
    """Where embedding stands: rows with chunks, chunks, the queue (autoembed_status's numbers)."""
    config = Document.objects.embedding_config()
    found = collect(configs=[config])
    return {"status": found.configs[0], "queue": found}


def index(request: HttpRequest) -> HttpResponse:
    form = DocumentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()  # the trigger queues it; the worker embeds it
        return redirect("index")
    documents = Document.objects.annotate(chunks=Count("embedding_chunks"))[:100]
    return render(
        request,
        "documents/index.html",
        {"documents": documents, "form": form, **embedding_status()},
    )


def search(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()
    mode = request.GET.get("mode", "semantic")
    mode = mode if mode in ("semantic", "hybrid") else "semantic"
    results, error = [], None
    if q:
        try:
            # Each result carries its best chunk: distance, chunk_text, chunk_number.
            if mode == "hybrid":
                results = list(Document.objects.hybrid_search(q, k=10))
            else:
                results = list(Document.objects.semantic_search(q, k=10))
        except AutoembedError as exc:  # the provider failed, or the query cannot be used
            error = str(exc)
    return render(
        request,
        "documents/search.html",
        {"q": q, "mode": mode, "results": results, "error": error, **embedding_status()},
    )
