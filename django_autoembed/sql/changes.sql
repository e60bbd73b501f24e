-- A config moving to another model beside its live vectors (django_autoembed.changes).
-- {change} is the EmbeddingChange table, {identity} EmbeddingIdentity, {failures}
-- EmbeddingFailure, {batches} ProviderBatch, {queue} the queue's table; {table} is the
-- config's table, {col} its live column, {shadow} the column being filled, {previous} the
-- old vectors' column after the cutover, {pk} its key, {fn} the shadow's content function;
-- values are parameters.

-- all -- every change recorded (a process reads them to know which column serves what)
select config, "table", "column", shadow, "index", index_options, old_provider, old_model, old_dimensions,
       provider, model, dimensions, automatic, began, queued, switched, cut_over, "drop",
       failed_tries, last_error,
       extract(epoch from clock_timestamp() - began)::float8,
       extract(epoch from clock_timestamp() - switched)::float8
  from {change}

-- claim_backfill -- one process queues the shadow's backfill: the first to mark it
update {change} set queued = now() where config = %s and queued is null returning config

-- switch -- searches read the shadow from now on (the shadow is complete)
update {change} set switched = now()
 where config = %s and switched is null and cut_over is null
returning config

-- hold -- the change, held until the transaction that writes its shadow ends
select cut_over from {change} where config = %s for share

-- failed -- a step of the change failed: counted, and why, for status
update {change} set failed_tries = failed_tries + 1, last_error = %s where config = %s

-- lock -- the change, locked for its cutover (none: cut over or abandoned meanwhile)
select config, "drop" from {change} where config = %s and cut_over is null for update

-- table_lock_timeout -- how long the cutover waits for the table's lock: briefly (ms), or
-- past deadlock_timeout while an autovacuum works on it (Postgres cancels the autovacuum
-- for a lock waited for that long)
select set_config('lock_timeout', (
         case when exists (select from pg_stat_progress_vacuum where relid = to_regclass(%s))
              then extract(epoch from current_setting('deadlock_timeout')::interval) * 1000 + 500
              else %s end)::int || 'ms', true)

-- lock_table -- the table, for the renames (taken last, briefly)
lock table {table} in access exclusive mode

-- shadow_jobs -- backfill jobs queued (visible or not) for the shadow column (live edits'
-- jobs do not hold the cutover: it hands them to the live column)
select count(*) from {queue}
 where message->>'table' = %s and message->>'embeddingColumn' = %s
   and message->>'origin' = 'backfill'

-- shadow_batches -- Batch API batches of the shadow not collected yet
select count(*) from {batches} where config = %s and state <> 'done'

-- shadow_missing -- rows the live column serves with no vector in the shadow, and how many
-- of them are dead-lettered for it (rows not embedded in either yet do not count: under
-- steady inserts there are always some)
select count(*),
       count(*) filter (where exists (select from {failures} f
                                       where f.config = %s and f.object_pk = t.{pk}::text))
  from {table} t
 where t.{shadow} is null and t.{col} is not null

-- shadow_missing_chunks -- the same for chunks: rows with chunks in the live chunk table
-- {live} and none in the new one {next}
select count(*),
       count(*) filter (where exists (select from {failures} f
                                       where f.config = %s and f.object_pk = t.{pk}::text))
  from {table} t
 where exists (select from {live} c where c.parent_id = t.{pk})
   and not exists (select from {next} n where n.parent_id = t.{pk})

-- shadow_left_chunks -- rows with text and no chunk in the new chunk table, and with one
select count(*) filter (where not exists (select from {next} n where n.parent_id = t.{pk})
                          and coalesce({fn}(t), '') <> ''),
       count(*) filter (where exists (select from {next} n where n.parent_id = t.{pk}))
  from {table} t

-- shadow_left -- rows with text and no shadow vector (the backfill's progress)
select count(*) filter (where t.{shadow} is null and coalesce({fn}(t), '') <> ''),
       count(*) filter (where t.{shadow} is not null)
  from {table} t

-- owns -- whether this role owns (or acts as the owner of) every table named: only an owner
-- may index, rename or drop them (false: one it does not; null: none is there)
select bool_and(pg_has_role(current_user, c.relowner, 'USAGE'))
  from pg_class c
 where c.oid = any(array(select to_regclass(n) from unnest(%s::text[]) as n))

-- index_valid -- whether an index of this name exists and may be used
select coalesce((select i.indisvalid and i.indisready from pg_index i
                  where i.indexrelid = to_regclass(%s)), false)

-- index_state -- true: built; false: left invalid by a build that died; null: none
select (select i.indisvalid and i.indisready from pg_index i
         where i.indexrelid = to_regclass(%s))

-- drop_index --
drop index concurrently if exists {index}

-- build_index -- the shadow's index, in bulk, once every row has its vector (on the new
-- chunk table, for chunks)
create index concurrently {index} on {table} using hnsw ({shadow} {opclass})
  with (m = {m}, ef_construction = {ef})

-- rename_column --
alter table {table} rename column {old} to {new}

-- rename_index --
alter index {old} rename to {new}

-- lock_chunk_tables -- the chunk tables, for their renames (with the table, taken last)
lock table {live}, {next} in access exclusive mode

-- relations -- the indexes and sequences of a table (renamed with it)
select c.relname
  from pg_class c
 where c.oid in (select indexrelid from pg_index where indrelid = to_regclass(%s)
                 union
                 select objid from pg_depend
                  where refobjid = to_regclass(%s) and classid = 'pg_class'::regclass
                    and deptype in ('a', 'i'))
   and c.relkind in ('i', 'S')
 order by c.relname

-- rename_relation -- a table, index or sequence
alter table {old} rename to {new}

-- foreign_keys -- the foreign keys of a table (the old chunk table's go at the cutover:
-- its parent rows are deleted without it from then on)
select conname from pg_constraint where conrelid = to_regclass(%s) and contype = 'f'

-- drop_constraint --
alter table {table} drop constraint {name}

-- create_chunks -- a new chunk table shaped like the live one (its keys are added next)
create table {next} (like {live} including defaults including constraints including identity
                                 including generated including storage)

-- chunk_keys -- the new chunk table's keys, as the chunk model declares them on the live one
alter table {next} add constraint {pkey} primary key ({id}),
  add constraint {uniq} unique (parent_id, number) deferrable initially immediate,
  add constraint {fk} foreign key (parent_id) references {table} ({pk})
      deferrable initially deferred

-- chunk_parent_index --
create index {name} on {next} (parent_id)

-- alter_type -- the new vectors' type (on an empty table)
alter table {next} alter column {col} type {type}

-- has_table -- whether the table exists
select to_regclass(%s) is not null

-- drop_previous_chunks -- the old chunks, once they are not needed (their index goes too)
drop table if exists {previous}

-- drop_chunks -- an abandoned change's new chunk table
drop table if exists {next}

-- retarget -- jobs of the shadow now name the live column and its content function
update {queue}
   set message = message || jsonb_build_object('embeddingColumn', %s::text,
                                               'contentFunction', %s::text)
 where message->>'table' = %s and message->>'embeddingColumn' = %s

-- forget_live_failures -- the old vectors' failures (those rows are the shadow's now)
delete from {failures} where config = %s

-- move_failures -- the shadow's failures are the live config's from now on
update {failures} set config = %s where config = %s

-- move_identity -- the live config's vectors are the new model's from now on
insert into {identity} (config, provider, model, dimensions, pinned, clearing, recorded)
values (%s, %s, %s, %s, false, false, now())
on conflict (config) do update
   set provider = excluded.provider, model = excluded.model,
       dimensions = excluded.dimensions, pinned = false, clearing = false, recorded = now()

-- forget_identity --
delete from {identity} where config = %s

-- move_usage -- what the new column's filling cost is the live config's from now on
insert into {usage} (day, config, model, mode, requests, inputs, tokens)
select day, %s, model, mode, requests, inputs, tokens from {usage} where config = %s
on conflict (day, config, model, mode) do update
   set requests = {usage}.requests + excluded.requests,
       inputs = {usage}.inputs + excluded.inputs,
       tokens = {usage}.tokens + excluded.tokens

-- forget_usage --
delete from {usage} where config = %s

-- cut_over --
update {change} set cut_over = now() where config = %s

-- drop_previous -- the old vectors, once they are not needed (their index goes with them)
alter table {table} drop column if exists {previous}

-- forget_jobs -- an abandoned shadow's jobs
delete from {queue} where message->>'table' = %s and message->>'embeddingColumn' = %s

-- forget_change --
delete from {change} where config = %s

-- one_row -- a row's key (the endpoint's nudge names it)
select {pk} from {table} limit 1

-- has_column -- whether the table has the column
select exists (select from pg_attribute
                where attrelid = to_regclass(%s) and attname = %s and not attisdropped)
