-- Per-model objects, rendered by django_autoembed.operations for each
-- declared embedding. Placeholders are psycopg.sql names: {table}, {function}, ...

-- content_function -- the text that is embedded for one row
create or replace function {function}(r {table})
returns text
language sql
stable
parallel safe
as $body$ select {expression} $body$

-- insert_trigger -- queue new rows, once per statement
create trigger {insert_trigger}
    after insert on {table}
    referencing new table as autoembed_new
    for each statement
    execute function autoembed.queue_inserted({pk_arg}, {function_arg}, {column_arg})

-- update_trigger -- queue rows whose text changed, once per statement
create trigger {update_trigger}
    after update on {table}
    referencing old table as autoembed_old new table as autoembed_new
    for each statement
    execute function autoembed.queue_updated({pk_arg}, {function_arg}, {column_arg})

-- clear_trigger -- null the stored vector as soon as the text changes
create trigger {clear_trigger}
    before update on {table}
    for each row
    when ({function}(old.*) is distinct from {function}(new.*))
    execute function autoembed.clear_column({column_arg})

-- delete_trigger -- a chunked config: delete the chunks of deleted rows, once per statement
create trigger {delete_trigger}
    after delete on {table}
    referencing old table as autoembed_old
    for each statement
    execute function autoembed.delete_chunks({chunks_arg}, {pk_arg})

-- comment_trigger -- fingerprint of the declaration, compared by checks
comment on trigger {trigger} on {table} is {comment}

-- comment_function -- fingerprint of the declaration, compared by checks
comment on function {function}({table}) is {comment}

-- drop_trigger -- remove one trigger
drop trigger if exists {trigger} on {table}

-- drop_function -- remove the generated content function
drop function if exists {function}({table})

-- dedupe_chunks -- before the unique (parent, number) constraint: one chunk of each number
delete from {table} a using {table} b
 where a.{parent} = b.{parent} and a.{number} = b.{number} and a.{pk} > b.{pk}

-- drop_unique_chunk_numbers -- remove that constraint (a table rebuilt by a reversed migration may lack it)
alter table {table} drop constraint if exists {name}
