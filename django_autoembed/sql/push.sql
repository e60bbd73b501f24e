-- The push path's settings and pg_cron job (push.py: migrate's post_migrate, autoembed_sync).
-- Placeholders are psycopg.sql names or literals; values are query parameters.

-- command -- what pg_cron runs every SCHEDULE, with the configured sizes (literals)
select autoembed.process_embeddings(rows_per_post => {rows}, max_posts => {posts}, max_body_bytes => {body}, timeout_milliseconds => {timeout}, split_packed => {split}, keep_responses => {keep})

-- create_extension -- pg_net or pg_cron, where the server offers it
create extension if not exists {name}

-- installed -- is the function the cron job calls there (the app migrated far enough)
select to_regprocedure(%s) is not null

-- save_setting -- the endpoint's URL or token, read by invoke_endpoint (owner only)
insert into autoembed.settings (key, value) values (%s, %s)
on conflict (key) do update set value = excluded.value

-- job -- our pg_cron job, as scheduled now
select jobid, schedule, command from cron.job where jobname = %s

-- schedule -- create or replace our pg_cron job
select cron.schedule(%s, %s, %s)

-- unschedule -- remove our pg_cron job
select cron.unschedule(%s)
