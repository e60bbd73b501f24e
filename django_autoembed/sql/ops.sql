-- Read-only queries of the operations side: autoembed_status and the database
-- checks. Placeholders are psycopg.sql names; values are query parameters.

-- table_exists -- does a (quoted) table name resolve
select to_regclass(%s) is not null

-- config_rows -- rows of a table and how many hold a vector
select count(*), count({column}) from {table}

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
select count(*) from pg_extension where extname = %s

-- has_pgmq -- pgmq's functions, as the extension or from its bundled SQL
select to_regprocedure('pgmq.send(text, jsonb, integer)') is not null

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
