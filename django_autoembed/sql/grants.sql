-- The privileges processing needs (grants.py, autoembed_grants, check W101).

-- lacks -- whether a role lacks a privilege on an object (NULL: no such object yet);
-- {test} is has_*_privilege and {resolve} turns the name into an oid (to_regclass...)
select case when {resolve}(%s) is null then null else {test}(%s, {resolve}(%s), %s) end

-- grant -- give a role privileges on an object (printed, or run with --apply)
grant {privileges} on {kind} {name} to {role};

-- current_role -- the role this connection runs as
select current_user
