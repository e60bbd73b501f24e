-- Ninth migration. Frozen once released.

-- queue_ids_private -- the triggers' door into the queue, closed to PUBLIC
-- Any role could call queue_ids and queue unlimited paid work for rows it cannot even
-- touch. The two trigger functions now run as their owner, as queue_ids does, so that a
-- write the database allowed queues its rows however it was allowed (table or column
-- grants, a view, a SECURITY DEFINER function of the application): Postgres runs a
-- trigger function only as a trigger, on the tables the owner attached it to, so nobody
-- can call them to queue anything. Their search_path stays pinned to pg_catalog, and a
-- content function must set its own (check E109). queue_ids itself is left to its
-- owner and to the roles `manage.py autoembed_grants` names (the worker's --backfill).
alter function autoembed.queue_inserted() security definer;
alter function autoembed.queue_updated() security definer;
revoke execute on function autoembed.queue_ids(jsonb[], text, text, text, text) from public;

-- settle_requests -- look at pg_net's answers to earlier ticks' POSTs, and purge old history
-- As in 0006, and now pg_cron's run history of our job is kept for keep_responses too: at
-- a tick a second, cron.job_run_details grew by 86,400 rows a day and nothing purged it.
-- A POST the endpoint never answered (no response: a timeout or a refused connection; or
-- an answer without the endpoint's X-Completed-Jobs header: a proxy's error page) hands
-- its messages back at once, the read not counted, unless a later tick took them since.
-- Answers older than keep_responses are deleted, ours only.
create or replace function autoembed.settle_requests(keep_responses interval)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    returned integer;
begin
    execute format(
        'with answered as (
             update autoembed.push_requests p
                set settled = true
               from net._http_response r
              where r.id = p.id and not p.settled
             returning p.msg_ids, p.hidden_until,
                       r.status_code is null or not exists (
                           select 1 from jsonb_object_keys(coalesce(r.headers, ''{}''::jsonb)) k
                            where lower(k) = ''x-completed-jobs'') as undelivered
         ), lost as (
             select unnest(msg_ids) as msg_id, hidden_until from answered where undelivered
         ), released as (
             update pgmq.%I q
                set vt = clock_timestamp(), read_ct = greatest(q.read_ct - 1, 0)
               from lost
              where q.msg_id = lost.msg_id and q.vt = lost.hidden_until
             returning 1
         )
         select count(*) from released',
        'q_' || autoembed.queue_name())
       into returned;
    begin
        delete from net._http_response r
         using autoembed.push_requests p
         where r.id = p.id and p.created < clock_timestamp() - keep_responses;
    exception when insufficient_privilege then
        null;  -- pg_net's own TTL (pg_net.ttl) clears them in the end
    end;
    delete from autoembed.push_requests where created < clock_timestamp() - keep_responses;
    begin
        delete from cron.job_run_details d
         using cron.job j
         where d.jobid = j.jobid and j.jobname = 'autoembed-process-embeddings'
           and d.end_time < clock_timestamp() - keep_responses;
    exception when undefined_table or invalid_schema_name or insufficient_privilege then
        null;  -- no pg_cron here (the endpoint was called some other way), or not ours to purge
    end;
    return returned;
end;
$$;
revoke all on function autoembed.settle_requests(interval) from public;
