-- Least privilege (fourth migration). Frozen once released.
--
-- An application role that holds only grants on its own tables must be able to
-- write them. The trigger functions run as the role that writes, with a pinned
-- search path, so no code runs with more rights than its caller; they hand the
-- changed rows to queue_ids, which runs as its owner and is the one door into
-- the queue. Triggers fire whatever EXECUTE says on their functions.

-- The queue's name is rewritten by autoembed_sync: not a constant.
alter function autoembed.queue_name() stable;

-- queue_ids -- send one message per chunk of row ids and wake listening workers
-- Runs as its owner, for any caller, and only for tables that carry this app's
-- triggers: a role cannot queue rows of a table nobody declared.
create or replace function autoembed.queue_ids(
    row_ids jsonb[],
    table_schema text,
    table_name text,
    content_function text,
    embedding_column text
)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    chunk constant integer := 500;
    base jsonb := jsonb_build_object(
        'schema', table_schema,
        'table', table_name,
        'contentFunction', content_function,
        'embeddingColumn', embedding_column
    );
    messages jsonb[];
begin
    if row_ids is null or cardinality(row_ids) = 0 then
        return 0;
    end if;
    if not exists (
        select 1 from pg_trigger t
         where t.tgrelid = to_regclass(format('%I.%I', table_schema, table_name))
           and t.tgfoid = 'autoembed.queue_inserted()'::regprocedure
    ) then
        raise exception 'autoembed: %.% has no embedding declared', table_schema, table_name
            using hint = 'Only tables with django_autoembed''s triggers can be queued.';
    end if;
    select array_agg(
               case when cardinality(g.ids) = 1
                    then jsonb_build_object('id', g.ids[1])
                    else jsonb_build_object('ids', to_jsonb(g.ids))
               end || base)
      into messages
      from (select array_agg(id) as ids
              from (select id, (ord - 1) / chunk as grp
                      from unnest(row_ids) with ordinality as u(id, ord)) numbered
             group by grp) g;
    perform pgmq.send_batch(autoembed.queue_name(), messages);
    perform pg_notify('autoembed', autoembed.queue_name());
    return cardinality(row_ids);
end;
$$;

grant usage on schema autoembed to public;
grant execute on function autoembed.queue_ids(jsonb[], text, text, text, text) to public;
revoke all on function autoembed.queue_name() from public;
revoke all on function autoembed.queue_inserted() from public;
revoke all on function autoembed.queue_updated() from public;
revoke all on function autoembed.clear_column() from public;
revoke all on function autoembed.process_embeddings(int, int, int) from public;
