-- Queue access: the pgmq calls and the few direct reads of the queue's table.
-- {queue} and {archive} are the queue's tables, composed by queue.tables();
-- values are always parameters.

-- read -- take up to qty messages, hidden for vt seconds
select msg_id, read_ct, message, vt from pgmq.read(%s, %s, %s)

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

-- release_untouched -- hand back messages still hidden as their read left them, the read not counted
update {queue} q
   set vt = clock_timestamp(), read_ct = greatest(q.read_ct - 1, 0)
  from unnest(%s::bigint[], %s::timestamptz[]) as h(msg_id, vt)
 where q.msg_id = h.msg_id and q.vt = h.vt

-- shrink -- a message keeps some of its rows (the others were sent on as a new message)
update {queue} set message = %s::jsonb where msg_id = %s

-- next_visible_in -- seconds until the next hidden message shows (NULL: queue empty)
select extract(epoch from min(vt) - clock_timestamp()) from {queue}

-- lookup -- messages by id, whether hidden or not (jobs posted to the endpoint)
select msg_id, read_ct, message, vt from {queue} where msg_id = any(%s::bigint[])

-- depth -- messages, and how long the oldest has waited in fractional seconds
select count(*), extract(epoch from clock_timestamp() - min(enqueued_at)) from {queue}

-- exists -- is the queue's table there
select to_regclass(%s) is not null

-- backlog -- queued rows per target, counting every message (visible, hidden or delayed)
select message->>'table', message->>'contentFunction', message->>'embeddingColumn',
       sum(coalesce(jsonb_array_length(message->'ids'), 1))
  from {queue}
 group by 1, 2, 3

-- notify -- wake the workers listening on a channel
select pg_notify(%s, '')

-- listen -- hear a channel on this connection
listen {channel}
