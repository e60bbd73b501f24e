"""The loopback OpenAI fake, room by room (``fake_openai`` is its public face):

- ``server``: ``FakeEmbeddingsServer``, what a test sets and reads, start and stop;
- ``handler``: the HTTP server and the routes;
- ``embeddings``: ``/v1/embeddings``, with its limits and injected failures;
- ``batches``: the Files and Batch APIs;
- ``limits`` and ``protocol``: the decisions and the shapes, without I/O;
- ``vectors``: the vectors it answers with.
"""
