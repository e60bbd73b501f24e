-- The HNSW index during backfills: its state, its drop and bulk build, the backlog's size.
-- Placeholders are psycopg.sql names; values are query parameters.

-- index_rows -- how many entries an index holds, as the planner last counted (-1: never)
select reltuples from pg_class where oid = to_regclass(%s)

-- index_valid -- whether an index exists and is valid (NULL: it does not exist)
select indisvalid from pg_index where indexrelid = to_regclass(%s)

-- owns_table -- may the connected role drop and create the table's indexes
select pg_has_role(current_user, relowner, 'USAGE') from pg_class where oid = to_regclass(%s)

-- drop_index -- take an index down without blocking writes (outside a transaction block)
drop index concurrently if exists {index}

-- text_bytes -- the average size of the text the newest rows of a table give to embed
select avg(octet_length({function}(r))) from (select * from {table} order by {pk} desc limit 100) r

-- queued_with_chunks -- queued rows of one chunked config that have chunks already (edits)
select count(*)
  from (select distinct jsonb_array_elements_text(
                   coalesce(message->'ids', jsonb_build_array(message->'id'))) as id
          from {queue}
         where message->>'table' = %s and message->>'embeddingColumn' = %s) q
 where exists (select 1 from {chunks} c where c.parent_id = q.id::{pktype})

-- table_rows -- a table's rows as the planner last counted them (-1 or 0: not yet)
select reltuples from pg_class where oid = to_regclass(%s)

-- set_session -- session settings of a connection of our own (names and values, in order)
select set_config(name, value, false) from unnest(%s::text[], %s::text[]) as s(name, value)

-- try_lock -- the advisory lock of one config's index, without waiting (our space, its key)
select pg_try_advisory_lock(%s::integer, %s::integer)

-- scan_current -- the session's values of some settings (NULL: not set, pgvector not loaded)
select name, current_setting(name, true) from unnest(%s::text[]) as s(name)

-- scan_set -- settings for the rest of this transaction (names and values, in order)
select set_config(name, value, true) from unnest(%s::text[], %s::text[]) as s(name, value)

-- scan_default -- a setting back to its default for the rest of this transaction
set local {name} to default
