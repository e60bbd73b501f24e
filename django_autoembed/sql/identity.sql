-- A config's stored vectors: whether there are any, and clearing them for a re-embed.
-- {table} is the table that holds the vectors (the chunk table, for chunks), {col} its column.

-- has_vectors -- whether any vector is stored
select exists (select from {table} where {col} is not null)

-- clear_column -- forget a column's vectors (the triggers queue nothing: no text changed)
update {table} set {col} = null where {col} is not null

-- clear_chunks -- forget a chunked config's chunks (rows without chunks are backfilled)
delete from {table}
