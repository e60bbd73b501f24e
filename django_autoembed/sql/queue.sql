-- Queue access: the pgmq calls and the few direct reads of the queue's table.
-- {queue} and {archive} are the queue's tables, composed by queue.tables();
-- values are always parameters.

-- read -- take up to qty messages, hidden for vt seconds
select msg_id, read_ct, message, vt, enqueued_at from pgmq.read(%s, %s, %s)

-- send_batch -- queue new messages, visible after a delay in seconds
select pgmq.send_batch(%s, %s::jsonb[], %s)

-- delete -- messages done with
select pgmq.delete(%s, %s::bigint[])

-- archive -- messages given up on (their rows become EmbeddingFailure rows)
select pgmq.archive(%s, %s::bigint[])

-- set_vt -- hide messages for some seconds more (a retry's backoff)
select msg_id from pgmq.set_vt(%s, %s::bigint[], %s)

-- release -- hand messages back: visible after a delay, and this read not counted
update {queue}
   set vt = clock_timestamp() + make_interval(secs => %s), read_ct = greatest(read_ct - 1, 0)
 where msg_id = any(%s::bigint[])
returning msg_id, vt

-- recount -- count a read again (a message released, then worked on after all)
update {queue} set read_ct = read_ct + 1 where msg_id = any(%s::bigint[])

-- show_if_ours -- make messages visible now if they are still hidden as we left them
update {queue} q
   set vt = clock_timestamp()
  from unnest(%s::bigint[], %s::timestamptz[]) as h(msg_id, vt)
 where q.msg_id = h.msg_id and q.vt = h.vt

-- release_untouched -- hand back messages still hidden as their read left them, the read not counted
update {queue} q
   set vt = clock_timestamp(), read_ct = greatest(q.read_ct - 1, 0)
  from unnest(%s::bigint[], %s::timestamptz[]) as h(msg_id, vt)
 where q.msg_id = h.msg_id and q.vt = h.vt

-- shrink -- a message keeps some of its rows (the others were sent on as a new message)
update {queue} set message = %s::jsonb where msg_id = %s

-- next_visible_in -- seconds until the next hidden message shows (NULL: queue empty),
-- but for the messages given (those this process refused for a model change)
select extract(epoch from min(vt) - clock_timestamp()) from {queue}
 where msg_id <> all(%s::bigint[])

-- lookup -- messages by id, whether hidden or not (jobs posted to the endpoint)
select msg_id, read_ct, message, vt, enqueued_at from {queue} where msg_id = any(%s::bigint[])

-- depth -- messages; how long the oldest has waited, and the oldest a write queued (not a
-- backfill's: those wait their turn, and a batch's window), in fractional seconds, since
-- its rows were first queued (a message sent on for some of them says when); and how many
-- a Batch API batch holds
select count(*),
       extract(epoch from clock_timestamp() - min(since)),
       extract(epoch from clock_timestamp() - min(since) filter (where origin is null)),
       count(*) filter (where held)
  from (select coalesce({queued_at}, enqueued_at) as since,
               message->>'origin' as origin, message ? 'held_for' as held
          from {queue}) as q

-- queued_at -- when a message's rows were first queued, as a message sent on for some of
-- them says (Unix seconds; anything else in a job's body is ignored, never an error)
case when jsonb_typeof(message->'queued_at') = 'number' then
     case when (message->'queued_at')::numeric between 0 and 1e11
          then to_timestamp((message->'queued_at')::numeric::float8) end end

-- exists -- is the queue's table there
select to_regclass(%s) is not null

-- backlog -- queued rows per target, counting every message (visible, hidden or delayed)
-- but those a batch holds; and whether they are the backfill's, not back from a batch
-- (a Batch API worker sends those to batches)
select message->>'table', message->>'contentFunction', message->>'embeddingColumn',
       coalesce(message->>'origin' = 'backfill' and not message ? 'from_batch', false),
       sum(coalesce(jsonb_array_length(message->'ids'), 1))
  from {queue}
 where not message ? 'held_for'
 group by 1, 2, 3, 4

-- hold_for_batch -- messages a batch holds: hidden for its window, marked with its record;
-- only those still hidden as the filling left them (no other worker took them since)
update {queue} q
   set vt = clock_timestamp() + make_interval(secs => %s),
       message = q.message || jsonb_build_object('held_for', %s::bigint)
  from unnest(%s::bigint[], %s::timestamptz[]) as h(msg_id, vt)
 where q.msg_id = h.msg_id and q.vt = h.vt and not q.message ? 'held_for'
returning q.msg_id

-- back_from_batch -- a batch's messages back in the queue after a delay, no longer held;
-- marked from_batch (its id) when the API is to embed what the batch did not; only those
-- this batch holds
update {queue}
   set vt = clock_timestamp() + make_interval(secs => %s),
       message = (message - 'held_for')
                 || jsonb_strip_nulls(jsonb_build_object('from_batch', %s::bigint))
 where msg_id = any(%s::bigint[]) and message->>'held_for' = %s::bigint::text

-- notify -- wake the workers listening on a channel
select pg_notify(%s, '')

-- listen -- hear a channel on this connection
listen {channel}
