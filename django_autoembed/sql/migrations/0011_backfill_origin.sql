-- Eleventh migration. Frozen once released.

-- queue_ids_with_origin -- queue_ids, each message saying where it came from
-- The Batch API takes only what `process_embeddings --backfill` queued: a row a user
-- edits must not wait a day in a batch with its old text's vector. The backfill's
-- messages say so in an "origin" key; the triggers' say nothing (origin null). Same
-- checks as queue_ids, same owner's rights, and not PUBLIC's either.
create or replace function autoembed.queue_ids(
    row_ids jsonb[],
    table_schema text,
    table_name text,
    content_function text,
    embedding_column text,
    origin text
)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    chunk constant integer := 500;
    base jsonb := jsonb_strip_nulls(jsonb_build_object(
        'schema', table_schema,
        'table', table_name,
        'contentFunction', content_function,
        'embeddingColumn', embedding_column,
        'origin', origin
    ));
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

revoke execute on function autoembed.queue_ids(jsonb[], text, text, text, text, text) from public;

-- queue_ids_triggers -- the triggers' five-argument door, now the one above with no origin
create or replace function autoembed.queue_ids(
    row_ids jsonb[],
    table_schema text,
    table_name text,
    content_function text,
    embedding_column text
)
returns integer
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
    select autoembed.queue_ids(
        row_ids, table_schema, table_name, content_function, embedding_column, null::text
    )
$$;
