-- autoembed_status: rows, vectors and queue per config, and the push path's state.
-- Placeholders are psycopg.sql names; values are query parameters.

-- config_rows -- rows of a table and how many hold a vector
select count(*), count({column}) from {table}

-- config_rows_chunked -- rows of a table, how many have chunks, and the chunks
select (select count(*) from {table}), (select count(distinct parent_id) from {chunks}),
       (select count(*) from {chunks})

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
       extract(epoch from clock_timestamp() - min(coalesce({queued_at}, enqueued_at)))
  from {queue}
 where message->>'table' = %s and message->>'embeddingColumn' = %s

-- push_extensions -- which of the push path's extensions are installed
select extname from pg_extension where extname in ('pg_cron', 'pg_net')

-- push_job -- our pg_cron job
select jobid, active, schedule from cron.job where jobname = %s

-- push_last_run -- the job's latest run
select end_time, status from cron.job_run_details where jobid = %s order by runid desc limit 1

-- table_rows -- a table's rows as the planner last counted them (-1 or 0: not yet)
select reltuples from pg_class where oid = to_regclass(%s)
