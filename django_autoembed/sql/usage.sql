-- Usage accounting. {usage} is the EmbeddingUsage table; values are parameters.

-- record -- add a batch's requests, inputs and tokens to the day's row of a config
insert into {usage} as u (day, config, model, mode, requests, inputs, tokens)
values (%s, %s, %s, %s, %s, %s, %s)
on conflict (day, config, model, mode) do update
   set requests = u.requests + excluded.requests,
       inputs = u.inputs + excluded.inputs,
       tokens = u.tokens + excluded.tokens
