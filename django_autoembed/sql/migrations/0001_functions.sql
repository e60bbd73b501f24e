-- Generic functions shared by every table's triggers (first version).
-- Frozen once released: a change goes into a new file with a _v2 name.

-- queue_name -- which pgmq queue the triggers write to; rewritten by autoembed_sync
create or replace function autoembed.queue_name()
returns text
language sql
immutable
as $$ select 'embedding_jobs'::text $$;

-- queue_ids -- send one message per chunk of row ids and wake listening workers
-- Messages keep the guide's keys; a chunk of one row uses "id", larger ones "ids".
create or replace function autoembed.queue_ids(
    row_ids jsonb[],
    table_schema text,
    table_name text,
    content_function text,
    embedding_column text
)
returns integer
language plpgsql
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

-- queue_inserted -- AFTER INSERT ... FOR EACH STATEMENT: queue every new row
-- tg_argv: primary key column, content function, embedding column.
create or replace function autoembed.queue_inserted()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    ids jsonb[];
begin
    execute format('select array_agg(to_jsonb(n.%I)) from autoembed_new n', tg_argv[0])
       into ids;
    perform autoembed.queue_ids(ids, tg_table_schema, tg_table_name, tg_argv[1], tg_argv[2]);
    return null;
end;
$$;

-- queue_updated -- AFTER UPDATE ... FOR EACH STATEMENT: queue rows whose text changed
-- Rows whose content function gives the same text as before cost nothing.
create or replace function autoembed.queue_updated()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    ids jsonb[];
begin
    execute format(
        'select array_agg(to_jsonb(n.%1$I))
           from autoembed_new n
           left join autoembed_old o on o.%1$I = n.%1$I
          where o.%1$I is null or %2$I.%3$I(n) is distinct from %2$I.%3$I(o)',
        tg_argv[0], tg_table_schema, tg_argv[1])
       into ids;
    perform autoembed.queue_ids(ids, tg_table_schema, tg_table_name, tg_argv[1], tg_argv[2]);
    return null;
end;
$$;

-- clear_column -- BEFORE UPDATE ... FOR EACH ROW: null the embedding (tg_argv[0])
-- The trigger's WHEN clause limits it to rows whose text changed.
create or replace function autoembed.clear_column()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    new := jsonb_populate_record(new, jsonb_build_object(tg_argv[0], null));
    return new;
end;
$$;
