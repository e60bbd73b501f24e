-- The Batch API's bookkeeping beyond the ORM: the lock that serializes submissions of one
-- model, and the backlog's estimate for `process_embeddings --batch-api --estimate`.

-- lock_model -- held while a batch's tokens are reserved (two keys: ours, the model's)
select pg_advisory_xact_lock(%s, %s)

-- queued_key -- (an estimate condition) a queued job of this target names the row
t.{pk}::text in (
    select coalesce(e.value, q.message->'id') #>> '{{}}'
      from {queue} q
      left join lateral jsonb_array_elements(q.message->'ids') as e(value) on true
     where q.message->>'table' = %s
       and q.message->>'contentFunction' = %s
       and q.message->>'embeddingColumn' = %s
)

-- estimate_rows -- rows to embed: with some text, and no vector yet or queued
select count(*) from {table} t
 where ({unembedded} or {queued}) and coalesce({fn}(t), '') <> ''

-- estimate_sample -- the texts of a random sample of the rows to embed
select {fn}(t) from {table} t
 where ({unembedded} or {queued}) and coalesce({fn}(t), '') <> ''
 order by random() limit %s
