-- Least privilege (fourth migration). Frozen once released.
--
-- An application role that holds only grants on its own tables must be able to
-- write them: the trigger functions run as their owner (the role that ran the
-- migrations), with a pinned search path, and no one else may call them or the
-- queue function directly. Triggers fire whatever EXECUTE says.

-- The queue's name is rewritten by autoembed_sync: not a constant.
alter function autoembed.queue_name() stable;

alter function autoembed.queue_ids(jsonb[], text, text, text, text) security definer;
alter function autoembed.queue_inserted() security definer;

-- queue_updated -- AFTER UPDATE ... FOR EACH STATEMENT: queue rows whose text changed
-- Runs as its owner. A content function of the user's own may call helpers of
-- its table's schema unqualified, so that schema joins the search path (after
-- pg_catalog, so no built-in can be replaced) while the content is compared.
create or replace function autoembed.queue_updated()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    ids jsonb[];
begin
    perform set_config('search_path', format('pg_catalog, %I, pg_temp', tg_table_schema), true);
    execute format(
        'select array_agg(to_jsonb(n.%1$I))
           from autoembed_new n
           left join autoembed_old o on o.%1$I = n.%1$I
          where o.%1$I is null or %2$I.%3$I(n) is distinct from %2$I.%3$I(o)',
        tg_argv[0], tg_table_schema, tg_argv[1])
       into ids;
    perform set_config('search_path', 'pg_catalog, pg_temp', true);
    perform autoembed.queue_ids(ids, tg_table_schema, tg_table_name, tg_argv[1], tg_argv[2]);
    return null;
end;
$$;

revoke all on function autoembed.queue_name() from public;
revoke all on function autoembed.queue_ids(jsonb[], text, text, text, text) from public;
revoke all on function autoembed.queue_inserted() from public;
revoke all on function autoembed.queue_updated() from public;
revoke all on function autoembed.clear_column() from public;
revoke all on function autoembed.process_embeddings(int, int, int) from public;
