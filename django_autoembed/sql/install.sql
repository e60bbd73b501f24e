-- Installing pgmq and the queue (the app's migrations and autoembed_sync).
-- Placeholders are psycopg.sql names; values are query parameters.

-- has_extension -- is an extension installed
select count(*) > 0 from pg_extension where extname = %s

-- extension_available -- could the server create an extension
select count(*) > 0 from pg_available_extensions where name = %s

-- has_pgmq_schema -- is pgmq there, as the extension or from its bundled SQL
select to_regnamespace('pgmq') is not null

-- queue_registered -- does pgmq know a queue of this name
select count(*) > 0 from pgmq.meta where queue_name = %s

-- queue_count -- how many queues pgmq holds (ours and others')
select count(*) from pgmq.meta

-- create_pgmq -- pgmq as the extension, where the server has it
create extension if not exists pgmq

-- create_queue -- our queue
select pgmq.create(%s)

-- drop_queue -- our queue, if pgmq knows it
select pgmq.drop_queue(queue_name) from pgmq.meta where queue_name = %s

-- drop_pgmq -- pgmq as the extension, once no queue uses it
drop extension pgmq cascade

-- drop_pgmq_schema -- pgmq installed from its bundled SQL, once no queue uses it
drop schema pgmq cascade

-- database_exists -- is there a database of this name (the embedded server for tests and demos)
select 1 from pg_database where datname = %s

-- create_database -- one more database on the embedded server
create database {name}
