-- The sessions that process batches (db.py): their statement_timeout.

-- set_statement_timeout -- the session's statement_timeout from now on
select set_config('statement_timeout', %s, false)

-- swap_statement_timeout -- the session's statement_timeout as it was, and a new one from now on
select current_setting('statement_timeout'), set_config('statement_timeout', %s, false)

-- statement_timeout -- the session's statement_timeout as Postgres shows it
show statement_timeout
