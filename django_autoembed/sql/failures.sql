-- Dead letters. {failures} is the EmbeddingFailure table; values are parameters.

-- record -- one upsert for all rows given up on in a batch; a row that failed
-- before adds its attempts, so two workers dead-lettering one row never collide
insert into {failures} as f (config, "table", object_pk, job, error, attempts, first_failed_at, last_failed_at)
select d.config, d.tbl, d.object_pk, d.job, d.error, d.attempts, now(), now()
  from unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[], %s::text[], %s::int[])
       as d(config, tbl, object_pk, job, error, attempts)
on conflict (config, object_pk) do update
   set error = excluded.error,
       job = excluded.job,
       attempts = f.attempts + excluded.attempts,
       last_failed_at = excluded.last_failed_at

-- forget -- rows embedded since they were given up on (their text was edited, or a
-- retry went through) are failing no more; an index probe a row, none when none failed
delete from {failures}
 where config = %s and object_pk = any(%s::text[])
