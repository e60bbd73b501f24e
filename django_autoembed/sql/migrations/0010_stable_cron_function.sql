-- Tenth migration: the cron job's function under one stable name. Frozen once released.

-- process_embeddings -- POST due jobs to the endpoint, several POSTs a tick
-- The body of 0006's process_embeddings_v2, under the one name the cron job calls from now
-- on: an overload of the guide's process_embeddings(batch_size, max_requests,
-- timeout_milliseconds), told apart by its parameters (the cron command names them all;
-- none has a default, so a call with none still means the guide's). A changed body comes
-- in a later migration under this same name.
create or replace function autoembed.process_embeddings(
    rows_per_post int,
    max_posts int,
    max_body_bytes int,
    timeout_milliseconds int,
    split_packed boolean,
    keep_responses interval
)
returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    queue text := autoembed.queue_name();
    budget int := rows_per_post * max_posts;
    -- A little longer than pg_net waits for the answer: settle_requests hands back a POST
    -- that went unanswered before its jobs would show again by themselves.
    hidden_until timestamptz := clock_timestamp() + make_interval(secs => timeout_milliseconds / 1000.0 + 5);
    posted int := 0;
    packed record;
    split int := 0;
    job record;
    batch jsonb := '[]';
    ids bigint[] := '{}';
    batch_rows int := 0;
    batch_bytes int := 0;
    request bigint;
begin
    perform autoembed.settle_requests(keep_responses);

    if split_packed then
        -- The guide's shape: one job per row. Packed messages due now are split first,
        -- within the budget, into messages of one row each (their attempts carried).
        for packed in execute format(
            'select msg_id, message, read_ct from pgmq.%I
              where message ? ''ids'' and vt <= clock_timestamp()
              order by msg_id limit $1 for update skip locked', 'q_' || queue)
            using budget
        loop
            exit when split >= budget;
            perform pgmq.send_batch(queue, array(
                select (packed.message - 'ids')
                       || jsonb_build_object('id', row_id)
                       || case when packed.read_ct > 0 or packed.message ? 'attempts'
                               then jsonb_build_object('attempts',
                                    coalesce((packed.message ->> 'attempts')::int, 0) + packed.read_ct)
                               else '{}'::jsonb end
                  from jsonb_array_elements(packed.message -> 'ids') as ids(row_id)));
            perform pgmq.delete(queue, packed.msg_id);
            split := split + jsonb_array_length(packed.message -> 'ids');
        end loop;
    end if;

    -- Due messages in order until the row budget is spent; only those are hidden (and
    -- counted as read, as pgmq.read would), and every one of them is posted below.
    for job in execute format(
        'with due as (
             select msg_id, coalesce(jsonb_array_length(message -> ''ids''), 1) as n
               from pgmq.%1$I
              where vt <= clock_timestamp() and (not $3 or not message ? ''ids'')
              order by msg_id
              limit $1
                for update skip locked
         ), taken as (
             select msg_id from (select msg_id, n, sum(n) over (order by msg_id) as upto from due) d
              where upto - n < $1
         )
         update pgmq.%1$I q
            set vt = $2, read_ct = q.read_ct + 1
           from taken
          where q.msg_id = taken.msg_id
         returning q.msg_id,
                   q.message || jsonb_build_object(''jobId'', q.msg_id) as body,
                   coalesce(jsonb_array_length(q.message -> ''ids''), 1) as n',
        'q_' || queue)
        using budget, hidden_until, split_packed
    loop
        if batch_rows > 0 and (batch_rows + job.n > rows_per_post
                               or batch_bytes + octet_length(job.body::text) > max_body_bytes) then
            request := autoembed.invoke_endpoint(batch, timeout_milliseconds);
            insert into autoembed.push_requests (id, msg_ids, hidden_until)
            values (request, ids, hidden_until);
            batch := '[]'; ids := '{}'; batch_rows := 0; batch_bytes := 0;
        end if;
        batch := batch || jsonb_build_array(job.body);
        ids := ids || job.msg_id;
        batch_rows := batch_rows + job.n;
        batch_bytes := batch_bytes + octet_length(job.body::text) + 2;
        posted := posted + job.n;
    end loop;
    if batch_rows > 0 then
        request := autoembed.invoke_endpoint(batch, timeout_milliseconds);
        insert into autoembed.push_requests (id, msg_ids, hidden_until)
        values (request, ids, hidden_until);
    end if;
    return posted;
end;
$$;
revoke all on function autoembed.process_embeddings(int, int, int, int, boolean, interval) from public;

-- process_embeddings_v2 -- 0006's name, for cron jobs scheduled before this migration
-- autoembed_sync rewrites our job's command to call process_embeddings; until it runs, a
-- job that still names process_embeddings_v2 keeps working.
create or replace function autoembed.process_embeddings_v2(
    rows_per_post int = 500,
    max_posts int = 4,
    max_body_bytes int = 900000,
    timeout_milliseconds int = 30000,
    split_packed boolean = false,
    keep_responses interval = '10 minutes'
)
returns integer
language sql
set search_path = pg_catalog, pg_temp
as $$
    select autoembed.process_embeddings(
        rows_per_post, max_posts, max_body_bytes, timeout_milliseconds, split_packed,
        keep_responses
    )
$$;
revoke all on function autoembed.process_embeddings_v2(int, int, int, int, boolean, interval) from public;
