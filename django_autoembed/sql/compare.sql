-- autoembed_compare: the rows two configs of one model have both embedded. {table} is the
-- model's table, {fn} a config's content function, {pk} its key; values are parameters.

-- sample -- a config's texts of random rows embedded in both configs
select {fn}(t) from {table} t where {both} order by random() limit %s

-- has_vector -- (a condition) the row has a vector in this column
t.{col} is not null

-- has_chunks -- (a condition) the row has chunks in this chunk table
exists (select from {chunks} c where c.parent_id = t.{pk})

-- coverage -- rows with a vector (or chunks), and rows
select count(*) filter (where {has}), count(*) from {table} t
