-- Chunks deleted with their row in the database itself (seventh migration). Frozen once
-- released.
--
-- The chunk table's foreign key to its row is Django's: deferred, and cascaded only by
-- the ORM's collector. A row deleted in SQL (psql, another service, a raw query) would
-- otherwise fail at commit on that key. One statement-level trigger per chunked config
-- deletes the chunks of the rows a statement deleted, before the deferred check runs.

-- delete_chunks -- AFTER DELETE ... FOR EACH STATEMENT on a chunked config's table
-- tg_argv: the chunk table (in the row table's schema), the row table's key column.
-- Runs as its owner, so a role that may delete rows need not be granted the chunks too.
create or replace function autoembed.delete_chunks()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    execute format(
        'delete from %I.%I c using autoembed_old o where c.parent_id = o.%I',
        tg_table_schema, tg_argv[0], tg_argv[1]
    );
    return null;
end;
$$;

revoke all on function autoembed.delete_chunks() from public;
