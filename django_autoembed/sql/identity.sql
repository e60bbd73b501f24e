-- A config's recorded identity, and its stored vectors. {identity} is the
-- EmbeddingIdentity table; {table} holds the vectors (the chunk table, for chunks), {col}
-- is their column, {pk} its key, of type {pktype}; values are parameters.

-- claim -- record the declared identity when none is (in the transaction of a first write)
insert into {identity} (config, provider, model, dimensions, pinned, clearing, recorded)
values (%s, %s, %s, %s, false, false, now())
on conflict (config) do nothing

-- read -- the recorded identity
select provider, model, dimensions, pinned, clearing from {identity} where config = %s

-- hold -- the recorded identity, held until the transaction ends (a re-embed waits for it)
select provider, model, dimensions, pinned, clearing from {identity} where config = %s
   for share

-- take -- the recorded identity, locked to be replaced (by the first write of another)
select provider, model, dimensions, pinned, clearing from {identity} where config = %s
   for update

-- has_vectors -- whether any vector is stored
select exists (select from {table} where {col} is not null)

-- page_end -- the last key of the next page of rows after a key (null: from the first)
select {pk} from (
    select {pk} from {table}
     where %s::{pktype} is null or {pk} > %s::{pktype}
     order by {pk} limit %s
) page
order by {pk} desc limit 1

-- clear_column -- forget one page's vectors, its rows locked in key order (the triggers
-- queue nothing: no text changed)
with page as (
    select {pk} from {table}
     where (%s::{pktype} is null or {pk} > %s::{pktype}) and {pk} <= %s::{pktype}
       and {col} is not null
     order by {pk}
       for update
)
update {table} t set {col} = null from page where t.{pk} = page.{pk}

-- clear_chunks -- forget one page of a chunked config's chunks (its rows are backfilled)
with page as (
    select {pk} from {table}
     where (%s::{pktype} is null or {pk} > %s::{pktype}) and {pk} <= %s::{pktype}
     order by {pk}
       for update
)
delete from {table} t using page where t.{pk} = page.{pk}
