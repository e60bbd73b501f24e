from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from django_autoembed.exceptions import AutoembedError

from .models import Document


class DocumentForm(forms.ModelForm):
    class Meta:
        model = Document
        fields = ["title", "content"]
        widgets = {
            "title": forms.TextInput(attrs={"size": 60}),
            "content": forms.Textarea(attrs={"rows": 4, "cols": 60}),
        }


def index(request: HttpRequest) -> HttpResponse:
    form = DocumentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("index")
    documents = Document.objects.all()[:100]
    return render(
        request,
        "documents/index.html",
        {
            "documents": documents,
            "form": form,
            "embedded": Document.objects.filter(embedding__isnull=False).count(),
            "total": Document.objects.count(),
        },
    )


MODES = {"semantic": "by meaning", "hybrid": "by meaning and words"}


def search(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()
    mode = request.GET.get("mode", "semantic")
    mode = mode if mode in MODES else "semantic"
    results, error = [], None
    if q:
        try:
            if mode == "hybrid":
                results = list(Document.objects.hybrid_search(q, k=10))
            else:
                results = list(Document.objects.semantic_search(q, k=10))
        except AutoembedError as exc:
            error = str(exc)
    return render(
        request,
        "documents/search.html",
        {"q": q, "mode": mode, "modes": MODES, "results": results, "error": error},
    )
