-- The vector store. {store} is the StoredVector table (unlogged); values are parameters.

-- get -- the stored vectors of these keys
select key, vector from {store} where key = any(%b::bytea[])

-- put -- keep new vectors; an entry already there stays
insert into {store} (key, vector, created)
select k, v, now() from unnest(%b::bytea[], %b::bytea[]) as u(k, v)
on conflict (key) do nothing

-- prune -- forget entries older than so many days
delete from {store} where created < now() - %s::float8 * interval '1 day'
