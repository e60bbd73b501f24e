-- The parts of a hybrid search's Reciprocal Rank Fusion, rendered by hybrid.Fused.
-- Placeholders are SQL the ORM compiled for the row: {distance} (the row's cosine
-- distance), {document} (its tsvector) and {query} (the tsquery); values (%s) are
-- parameters. A rank is the row's place among the candidates on that side, or null
-- past the first {candidates} (%s is the candidates + 1 in both LEAST and NULLIF).

-- vector_rank -- place by distance; null for a row without a vector
case when {distance} is not null
     then nullif(least(row_number() over (order by {distance}), %s), %s) end

-- text_rank -- place by ts_rank among the rows the query matches; null for the others
case when {document} @@ {query}
     then nullif(least(row_number() over (partition by {document} @@ {query}
                                         order by ts_rank({document}, {query}) desc), %s), %s) end

-- score -- weight / (rrf_k + rank), summed over the sides the row is ranked on
coalesce(%s / (%s + {vector_rank}), 0) + coalesce(%s / (%s + {text_rank}), 0)

-- check_tsquery -- a raw tsquery parsed by Postgres, to say what is wrong before a search
select to_tsquery(%s::regconfig, %s)
