-- Four eyes compares the people behind keys, not keys: each key names its holder
-- (`person:<name>` or `service:<name>`). A key made before this has none: it stands for a
-- holder of its own. A key is usable once its creation is recorded in the log
-- (`ApiKeyCreated`): made inactive, activated after the append.
alter table auth.api_keys add column holder text;
alter table auth.api_keys add column activated boolean not null default true;

-- The organization's keys as the log has them (never their secrets): who holds each, its
-- role, and when it was created and revoked.
create table organization.api_keys (
    key_id          uuid primary key,
    organization_id uuid not null,
    role            text not null,
    label           text not null,
    holder          text not null,
    created_by      text not null,
    created_at      timestamptz not null,
    revoked_by      text,
    revoked_at      timestamptz,
    revoke_reason   text,
    last_position   bigint not null
);
select ledger.grant_read_schema('organization');
