-- One-shot schema steps of the first migration. Frozen once released.

create schema if not exists autoembed;

-- Endpoint URL and bearer token for the push path; only the owner reads it,
-- the functions that need it are security definer.
create table if not exists autoembed.settings (
    key text primary key,
    value text
);
revoke all on autoembed.settings from public;
