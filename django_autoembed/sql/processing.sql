-- The processor's hot path and the backfill. Placeholders are psycopg.sql
-- names composed once per batch for one declared config: {table} (schema
-- qualified), {pk}, {pktype}, {fn} (the content function), {col}, {vectype};
-- values are always parameters; texts travel in binary (%b), which psycopg
-- dumps without escaping them character by character.

-- table_schema -- the schema a (quoted) table name resolves to
select n.nspname
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.oid = to_regclass(%s)

-- read_texts -- the text each row would embed now; deleted rows are simply absent
select t.{pk}, {fn}(t) from {table} t where t.{pk} = any(%s::{pktype}[])

-- lock_rows -- lock the rows that are free; rows an application transaction holds are left for later
select t.{pk} from {table} t where t.{pk} = any(%s::{pktype}[]) for update of t skip locked

-- existing_rows -- which of these rows still exist
select t.{pk} from {table} t where t.{pk} = any(%s::{pktype}[])

-- write_vectors -- store vectors only where the row still holds the text that was embedded
update {table} t
   set {col} = v.vec
  from unnest(%s::{pktype}[], %b::text[], %b::{vectype}[]) as v(pk, body, vec)
 where t.{pk} = v.pk and {fn}(t) is not distinct from v.body
returning t.{pk}

-- backfill_page -- queue the next page of rows with no vector and some text, in key order,
-- their messages marked as the backfill's (origin)
-- ({unembedded}: the row's vector is NULL, or, for a config in chunks, it has none)
with page as (
    select t.{pk} as id
      from {table} t
     where {unembedded} and coalesce({fn}(t), '') <> '' {after}
     order by t.{pk}
     limit %s
)
select autoembed.queue_ids(array_agg(to_jsonb(id)), %s, %s, %s, %s, %s),
       (array_agg(id order by id desc))[1]::text
  from page

-- unembedded_column -- (a backfill_page condition) the row's vector is NULL
t.{col} is null

-- unembedded_chunked -- (a backfill_page condition) a row of a config in chunks has none
not exists (select from {chunks} c where c.parent_id = t.{pk})

-- after_key -- (a backfill_page condition) past the page before, in key order
and t.{pk} > %s::{pktype}

-- read_chunks -- the chunks stored for these rows (a chunked config; {chunks} is its table)
select c.id, c.parent_id, c.number, c.text from {chunks} c where c.parent_id = any(%s::{pktype}[])

-- lock_chunks -- lock the chunks of these rows that are free (a row's parent lock is held)
select c.id from {chunks} c where c.parent_id = any(%s::{pktype}[]) for update of c skip locked

-- current_rows -- which of these rows still hold the text their chunks were made from
select t.{pk}
  from {table} t
  join unnest(%s::{pktype}[], %b::text[]) as v(pk, body) on t.{pk} = v.pk
 where {fn}(t) is not distinct from v.body

-- drop_chunks -- chunks whose text is gone from their row
delete from {chunks} where id = any(%s::bigint[])

-- renumber_chunks -- chunks kept whose place in the text changed
update {chunks} c
   set number = v.number
  from unnest(%s::bigint[], %s::int[]) as v(id, number)
 where c.id = v.id and c.number <> v.number

-- insert_chunks -- the new chunks of a text version, with their vectors
insert into {chunks} (parent_id, number, text, {ccol})
select * from unnest(%s::{pktype}[], %s::int[], %b::text[], %b::{cvectype}[])
