"""The HNSW index: its DDL (``indexes``), its deferral during backfills and bulk build
(``deferral``), and the settings a search scan runs with (``scan``)."""
