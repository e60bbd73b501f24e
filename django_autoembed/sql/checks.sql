-- The database checks (check --database): what the database holds against the declarations.
-- Placeholders are psycopg.sql names; values are query parameters.

-- table_exists -- does a (quoted) table name resolve
select to_regclass(%s) is not null

-- has_pgmq -- pgmq's functions, as the extension or from its bundled SQL (from the catalog:
-- a role without USAGE on schema pgmq may still ask)
select exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                where n.nspname = 'pgmq' and p.proname = 'send_batch')

-- column_type -- type and typmod (the dimensions of vector/halfvec) of a column
select format_type(atttypid, null), atttypmod
  from pg_attribute
 where attrelid = to_regclass(%s) and attname = %s and not attisdropped

-- trigger_state -- the fingerprint comment and enabled flag of one trigger
select obj_description(oid, 'pg_trigger'), tgenabled
  from pg_trigger
 where tgrelid = to_regclass(%s) and tgname = %s

-- function_state -- whether a content function exists, its fingerprint comment and its body
select to_regprocedure(%s) is not null,
       obj_description(to_regprocedure(%s)::oid, 'pg_proc'),
       (select prosrc from pg_proc where oid = to_regprocedure(%s)::oid)

-- can_read_migrations -- may the connected role read Django's migration records (true where there are none yet)
select to_regclass('django_migrations') is null
    or has_table_privilege(current_user, to_regclass('django_migrations'), 'SELECT')

-- function_search_path -- whether a function sets its own search_path (NULL: no such function)
select exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%%')
  from pg_proc p
 where p.oid = to_regprocedure(%s)

-- has_unique_chunk_numbers -- does a chunk table have a unique constraint on (parent_id, number)
select exists (
    select 1 from pg_constraint c
     where c.conrelid = to_regclass(%s) and c.contype = 'u'
       and (select array_agg(a.attname::text order by a.attname)
              from pg_attribute a
             where a.attrelid = c.conrelid and a.attnum = any(c.conkey))
           = array['number', 'parent_id']
)

-- current_user -- the role the checks run as
select current_user
