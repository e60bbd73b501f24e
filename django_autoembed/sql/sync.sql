-- autoembed_sync and post_migrate: the queue's name, jobs moved between queues, the push path.
-- Placeholders are psycopg.sql names; values are query parameters.

-- installed -- are this app's functions and pgmq in the database
select to_regprocedure('autoembed.queue_name()') is not null and to_regnamespace('pgmq') is not null

-- lock_queue -- keep writers out of a queue's table until this transaction ends
lock table {queue} in exclusive mode

-- set_queue_name -- point the triggers at another queue (stable, not immutable: it changes)
create or replace function autoembed.queue_name() returns text language sql stable as $$ select {name}::text $$

-- move_jobs -- move every waiting job from one queue to another, keeping its state
with moved as (
    delete from {old} returning vt, read_ct, enqueued_at, message
), inserted as (
    insert into {new} (vt, read_ct, enqueued_at, message)
    select vt, read_ct, enqueued_at, message from moved
    returning 1
)
select count(*) from inserted

-- former_queues -- the queues the triggers wrote to before, comma-separated
select value from autoembed.settings where key = 'former_queues'

-- set_former_queues -- remember the queues the triggers wrote to before
insert into autoembed.settings (key, value) values ('former_queues', %s)
on conflict (key) do update set value = excluded.value

-- queue_name -- the queue the triggers write to now
select autoembed.queue_name()
