-- Rate budgets: one token bucket per provider. {budgets} is the RateBudget table; values
-- are parameters. Times are the database's clock, so every worker reads the same one.

-- create -- a full bucket, unless another worker made one first
insert into {budgets} (provider, tokens, requests, at, factor, throttled)
values (%s, %s, %s, extract(epoch from clock_timestamp())::float8, 1, 0)
on conflict (provider) do nothing

-- lock -- the bucket, locked for this transaction's change, and the clock
select tokens, requests, at, factor, extract(epoch from clock_timestamp())::float8
  from {budgets}
 where provider = %s
   for update

-- read -- the bucket as it stands, and the clock
select tokens, requests, at, factor, extract(epoch from clock_timestamp())::float8
  from {budgets}
 where provider = %s

-- store -- the bucket after a reservation or a 429 (the last column counts 429s)
insert into {budgets} as b (provider, tokens, requests, at, factor, throttled)
values (%s, %s, %s, %s, %s, %s)
on conflict (provider) do update
   set tokens = excluded.tokens,
       requests = excluded.requests,
       at = excluded.at,
       factor = excluded.factor,
       throttled = b.throttled + excluded.throttled

-- learn -- the limits the provider's headers gave, for other workers and status
insert into {budgets} as b
       (provider, tokens, requests, at, factor, learned_tpm, learned_rpm, throttled)
values (%(provider)s, 0, 0, extract(epoch from clock_timestamp())::float8, 1,
        %(tpm)s, %(rpm)s, 0)
on conflict (provider) do update
   set learned_tpm = excluded.learned_tpm, learned_rpm = excluded.learned_rpm

-- learned -- the limits some worker learned from the provider's headers
select learned_tpm::float8, learned_rpm::float8 from {budgets} where provider = %s
