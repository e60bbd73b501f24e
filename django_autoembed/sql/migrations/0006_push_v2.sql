-- The push path, second version (sixth migration). Frozen once released.
--
-- The first version read jobs with pgmq.read and dropped the packed ones it had just
-- hidden (they waited out the visibility timeout with an attempt charged and were never
-- posted), and its cron command was fixed to 10 jobs x 10 POSTs a tick. This one takes
-- due messages in order up to a row budget, hides only what it posts, posts packed
-- messages whole (or split, the guide's shape, when asked), several POSTs a tick sized
-- by rows and bytes, hands back unspent the jobs of a POST that never reached the
-- endpoint, and keeps pg_net's responses to its own requests for a while only.

-- push_requests -- the POSTs our ticks made: which messages each carried, hidden until when
create table if not exists autoembed.push_requests (
    id bigint primary key,
    msg_ids bigint[] not null,
    hidden_until timestamptz not null,
    created timestamptz not null default clock_timestamp(),
    settled boolean not null default false
);
revoke all on autoembed.push_requests from public;

-- settle_requests -- look at pg_net's answers to earlier ticks' POSTs
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
    return returned;
end;
$$;
revoke all on function autoembed.settle_requests(interval) from public;

-- process_embeddings_v2 -- POST due jobs to the endpoint, several POSTs a tick
create or replace function autoembed.process_embeddings_v2(
    rows_per_post int = 500,
    max_posts int = 4,
    max_body_bytes int = 900000,
    timeout_milliseconds int = 30000,
    split_packed boolean = false,
    keep_responses interval = '10 minutes'
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
revoke all on function autoembed.process_embeddings_v2(int, int, int, int, boolean, interval) from public;
