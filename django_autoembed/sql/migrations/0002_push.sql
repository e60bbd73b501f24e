-- The push path (second migration): pg_cron calls process_embeddings(), which
-- POSTs batches of jobs through pg_net to the Django endpoint. Frozen once released.

-- invoke_endpoint -- POST one batch to the endpoint with the stored bearer token
-- Security definer: only this function (owned like the settings table) reads the token.
create or replace function autoembed.invoke_endpoint(
    body jsonb,
    timeout_milliseconds int = 5 * 60 * 1000
)
returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    url text := (select value from autoembed.settings where key = 'endpoint_url');
    token text := (select value from autoembed.settings where key = 'endpoint_token');
    request_id bigint;
begin
    if url is null or token is null then
        raise exception 'autoembed: endpoint_url or endpoint_token is not set'
            using hint = 'Set AUTOEMBED["ENDPOINT_URL"] and ["ENDPOINT_TOKEN"], then run manage.py autoembed_sync.';
    end if;
    select net.http_post(
        url => url,
        body => body,
        headers => jsonb_build_object(
            'Content-Type', 'application/json',
            'Authorization', 'Bearer ' || token
        ),
        timeout_milliseconds => timeout_milliseconds
    ) into request_id;
    return request_id;
end;
$$;
revoke all on function autoembed.invoke_endpoint(jsonb, int) from public;

-- process_embeddings -- read jobs, batch them with a jobId each, POST every batch
-- Messages that name many rows ("ids") are first split into one message per row,
-- so the endpoint sees the guide's one-job-per-row shape and retries stay per row.
create or replace function autoembed.process_embeddings(
    batch_size int = 10,
    max_requests int = 10,
    timeout_milliseconds int = 5 * 60 * 1000
)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    queue text := autoembed.queue_name();
    wanted int := batch_size * max_requests;
    split int := 0;
    packed record;
    batch jsonb;
begin
    for packed in execute format(
        'select msg_id, message from pgmq.%I
          where message ? ''ids'' and vt <= clock_timestamp()
          order by msg_id limit $1 for update skip locked', 'q_' || queue)
        using wanted
    loop
        exit when split >= wanted;
        perform pgmq.send_batch(queue, array(
            select (packed.message - 'ids') || jsonb_build_object('id', row_id)
              from jsonb_array_elements(packed.message -> 'ids') as ids(row_id)));
        perform pgmq.delete(queue, packed.msg_id);
        split := split + jsonb_array_length(packed.message -> 'ids');
    end loop;

    for batch in
        with jobs as (
            select msg_id, message
              from pgmq.read(queue, greatest(1, timeout_milliseconds / 1000), wanted)
             where not message ? 'ids'
        ),
        numbered as (
            select message || jsonb_build_object('jobId', msg_id) as job,
                   (row_number() over (order by msg_id) - 1) / batch_size as batch_num
              from jobs
        )
        select jsonb_agg(job order by job -> 'jobId') from numbered group by batch_num order by batch_num
    loop
        perform autoembed.invoke_endpoint(batch, timeout_milliseconds);
    end loop;
end;
$$;
