-- The operations side: autoembed_status, the database checks and autoembed_sync.
-- Placeholders are psycopg.sql names; values are query parameters.

-- table_exists -- does a (quoted) table name resolve
select to_regclass(%s) is not null

-- config_rows -- rows of a table and how many hold a vector
select count(*), count({column}) from {table}

-- null_share_planned -- the share of a column's values that are NULL, as ANALYZE last saw it
select null_frac from pg_stats
 where schemaname = current_schema() and tablename = %s and attname = %s

-- chunk_parents_planned -- distinct parent_id values of a chunk table as ANALYZE last saw them
select n_distinct from pg_stats
 where schemaname = current_schema() and tablename = %s and attname = 'parent_id'

-- config_sample -- a sample of a large table's rows (a percentage of its pages), and how many hold a vector
select count(*), count({column}) from {table} tablesample system (%s)

-- config_sample_chunked -- a sample of a large chunked table's rows, and how many have chunks
select count(*), count(*) filter (where exists (select 1 from {chunks} c where c.parent_id = t.{pk}))
  from {table} t tablesample system (%s)

-- config_queued -- rows of one config waiting in the queue, and the oldest job's age
select coalesce(sum(coalesce(jsonb_array_length(message->'ids'), 1)), 0),
       extract(epoch from clock_timestamp() - min(enqueued_at))
  from {queue}
 where message->>'table' = %s and message->>'embeddingColumn' = %s

-- push_extensions -- which of the push path's extensions are installed
select extname from pg_extension where extname in ('pg_cron', 'pg_net')

-- push_job -- our pg_cron job
select jobid, active, schedule from cron.job where jobname = %s

-- push_last_run -- the job's latest run
select end_time, status from cron.job_run_details where jobid = %s order by runid desc limit 1

-- has_extension -- is an extension installed
select count(*) > 0 from pg_extension where extname = %s

-- extension_available -- could the server create an extension
select count(*) > 0 from pg_available_extensions where name = %s

-- has_pgmq_schema -- is pgmq there, as the extension or from its bundled SQL
select to_regnamespace('pgmq') is not null

-- queue_registered -- does pgmq know a queue of this name
select count(*) > 0 from pgmq.meta where queue_name = %s

-- queue_count -- how many queues pgmq holds (ours and others')
select count(*) from pgmq.meta

-- has_pgmq -- pgmq's functions, as the extension or from its bundled SQL (from the catalog:
-- a role without USAGE on schema pgmq may still ask)
select exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                where n.nspname = 'pgmq' and p.proname = 'send_batch')

-- column_type -- type and typmod (the dimensions of vector/halfvec) of a column
select format_type(atttypid, null), atttypmod
  from pg_attribute
 where attrelid = to_regclass(%s) and attname = %s and not attisdropped

-- trigger_state -- the fingerprint comment and enabled flag of one trigger
select obj_description(oid, 'pg_trigger'), tgenabled
  from pg_trigger
 where tgrelid = to_regclass(%s) and tgname = %s

-- function_state -- whether a content function exists, its fingerprint comment and its body
select to_regprocedure(%s) is not null,
       obj_description(to_regprocedure(%s)::oid, 'pg_proc'),
       (select prosrc from pg_proc where oid = to_regprocedure(%s)::oid)

-- installed -- are this app's functions and pgmq in the database
select to_regprocedure('autoembed.queue_name()') is not null and to_regnamespace('pgmq') is not null

-- lock_queue -- keep writers out of a queue's table until this transaction ends
lock table {queue} in exclusive mode

-- set_queue_name -- point the triggers at another queue (stable, not immutable: it changes)
create or replace function autoembed.queue_name() returns text language sql stable as $$ select {}::text $$

-- move_jobs -- move every waiting job from one queue to another, keeping its state
with moved as (
    delete from {old} returning vt, read_ct, enqueued_at, message
), inserted as (
    insert into {new} (vt, read_ct, enqueued_at, message)
    select vt, read_ct, enqueued_at, message from moved
    returning 1
)
select count(*) from inserted

-- can_read_migrations -- may the connected role read Django's migration records (true where there are none yet)
select to_regclass('django_migrations') is null
    or has_table_privilege(current_user, to_regclass('django_migrations'), 'SELECT')

-- index_rows -- how many entries an index holds, as the planner last counted (-1: never)
select reltuples from pg_class where oid = to_regclass(%s)

-- index_valid -- whether an index exists and is valid (NULL: it does not exist)
select indisvalid from pg_index where indexrelid = to_regclass(%s)

-- owns_table -- may the connected role drop and create the table's indexes
select pg_has_role(current_user, relowner, 'USAGE') from pg_class where oid = to_regclass(%s)

-- drop_index -- take an index down without blocking writes (outside a transaction block)
drop index concurrently if exists {index}

-- function_search_path -- whether a function sets its own search_path (NULL: no such function)
select exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%%')
  from pg_proc p
 where p.oid = to_regprocedure(%s)

-- former_queues -- the queues the triggers wrote to before, comma-separated
select value from autoembed.settings where key = 'former_queues'

-- set_former_queues -- remember the queues the triggers wrote to before
insert into autoembed.settings (key, value) values ('former_queues', %s)
on conflict (key) do update set value = excluded.value

-- table_rows -- a table's rows as the planner last counted them (-1 or 0: not yet)
select reltuples from pg_class where oid = to_regclass(%s)

-- text_bytes -- the average size of the text the newest rows of a table give to embed
select avg(octet_length({function}(r))) from (select * from {table} order by {pk} desc limit 100) r

-- config_rows_chunked -- rows of a table, how many have chunks, and the chunks
select (select count(*) from {table}), (select count(distinct parent_id) from {chunks}),
       (select count(*) from {chunks})

-- queued_with_chunks -- queued rows of one chunked config that have chunks already (edits)
select count(*)
  from (select distinct jsonb_array_elements_text(
                   coalesce(message->'ids', jsonb_build_array(message->'id'))) as id
          from {queue}
         where message->>'table' = %s and message->>'embeddingColumn' = %s) q
 where exists (select 1 from {chunks} c where c.parent_id = q.id::{pktype})

-- has_unique_chunk_numbers -- does a chunk table have a unique constraint on (parent_id, number)
select exists (
    select 1 from pg_constraint c
     where c.conrelid = to_regclass(%s) and c.contype = 'u'
       and (select array_agg(a.attname::text order by a.attname)
              from pg_attribute a
             where a.attrelid = c.conrelid and a.attnum = any(c.conkey))
           = array['number', 'parent_id']
)
