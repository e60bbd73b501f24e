create or replace function "testapp_article_body_embedding_input"(r "testapp_article")
returns text
language sql
stable
parallel safe
as $body$ select pg_catalog.concat('# ', r."title", '

', r."body") $body$;
comment on function "testapp_article_body_embedding_input"("testapp_article") is 'autoembed:5cfad1d82300d8ce';
create trigger "autoembed_testapp_article_body_embedding_ins"
    after insert on "testapp_article"
    referencing new table as autoembed_new
    for each statement
    execute function autoembed.queue_inserted('id', 'testapp_article_body_embedding_input', 'body_embedding');
comment on trigger "autoembed_testapp_article_body_embedding_ins" on "testapp_article" is 'autoembed:5cfad1d82300d8ce';
create trigger "autoembed_testapp_article_body_embedding_upd"
    after update on "testapp_article"
    referencing old table as autoembed_old new table as autoembed_new
    for each statement
    execute function autoembed.queue_updated('id', 'testapp_article_body_embedding_input', 'body_embedding');
comment on trigger "autoembed_testapp_article_body_embedding_upd" on "testapp_article" is 'autoembed:5cfad1d82300d8ce';
