-- Ninth migration. Frozen once released.

-- queue_ids -- send one message per chunk of row ids and wake listening workers
-- As in 0004, and now only for a caller that may write the table: a role could queue
-- unlimited paid work for rows it cannot even touch. Writing rows queues them anyway,
-- so this takes nothing from a writer, and the trigger path still needs nothing but the
-- table's grants. The caller is the session's role (SET ROLE included): inside this
-- function current_user is its owner.
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
    caller name := coalesce(nullif(current_setting('role'), 'none'), session_user);
    target regclass := to_regclass(format('%I.%I', table_schema, table_name));
begin
    if row_ids is null or cardinality(row_ids) = 0 then
        return 0;
    end if;
    if not exists (
        select 1 from pg_trigger t
         where t.tgrelid = target
           and t.tgfoid = 'autoembed.queue_inserted()'::regprocedure
    ) then
        raise exception 'autoembed: %.% has no embedding declared', table_schema, table_name
            using hint = 'Only tables with django_autoembed''s triggers can be queued.';
    end if;
    if not has_table_privilege(caller, target, 'INSERT, UPDATE') then
        raise exception 'autoembed: role % may not write %.%, so it may not queue its rows',
                        caller, table_schema, table_name
            using errcode = 'insufficient_privilege',
                  hint = 'Rows are queued by writing them. A worker role gets what it needs '
                         'from manage.py autoembed_grants.';
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
