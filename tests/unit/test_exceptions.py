"""exceptions: one hierarchy for everything the package raises."""


def test_every_error_the_package_raises_descends_from_autoembed_error():
    """Callers catch AutoembedError (or the built-in kind it also is) for anything we raise."""
    import ast
    import builtins
    from pathlib import Path

    import django_autoembed
    from django_autoembed import exceptions

    # Not errors of ours: a module's missing attribute, a command's exit, a programming
    # mistake in calling ProviderError itself.
    allowed = {("__init__.py", "AttributeError"), ("exceptions.py", "ValueError")}
    root = Path(django_autoembed.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                found.add((path.name, name))
    strays = []
    for file, name in sorted(found):
        cls = getattr(exceptions, name, None) or getattr(builtins, name, None)
        if name == "CommandError" or (file, name) in allowed:
            continue
        if not (isinstance(cls, type) and issubclass(cls, exceptions.AutoembedError)):
            strays.append(f"{file}: {name}")
    assert not strays, strays
    assert issubclass(exceptions.InvalidValue, ValueError)
    assert issubclass(exceptions.UnknownConfig, LookupError)
