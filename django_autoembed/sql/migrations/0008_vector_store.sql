-- The vector store is a cache (eighth migration). Frozen once released.
--
-- Unlogged: writes skip the WAL, and a crash empties it, which costs at most some
-- provider requests. Vectors do not compress: storing them uncompressed spares the
-- attempt. A BRIN index on the creation time makes the workers' prune cheap.

alter table django_autoembed_storedvector set unlogged;
alter table django_autoembed_storedvector alter column vector set storage external;

create index django_autoembed_storedvector_created
    on django_autoembed_storedvector using brin (created);
