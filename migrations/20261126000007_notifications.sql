-- Notifications readable, rendered from the organization's templates and delivered to its
-- webhook (issue #21).
--
-- Templates are the organization's, versioned, by event (NotificationTemplateSet); the
-- defaults live in the code (version 0), so every row of the schema comes from the log.
-- Each notification gets an id (UUID v5 of the event's position, the recipient and the
-- kind), the template version, channel and text it was rendered with, whether it was read,
-- and how its delivery went; attempts are events of the notification's own stream.
drop table notification.notification_templates;
create table notification.notification_templates (
    organization_id uuid not null,
    kind            text not null,
    version         integer not null,
    channel         text not null,          -- 'webhook' | 'in_app'
    subject         text not null,
    body            text not null,
    created_at      timestamptz not null,
    last_position   bigint not null,
    primary key (organization_id, kind, version)
);
create table notification.webhooks (
    organization_id uuid primary key,
    url             text not null,
    version         integer not null,
    configured_at   timestamptz not null,
    last_position   bigint not null
);
truncate notification.notifications;
alter table notification.notifications
    add column notification_id  uuid not null,
    add column template_version integer not null,
    add column channel          text not null,
    add column subject          text not null,
    add column body             text not null,
    add column read_at          timestamptz,
    add column read_by          text,
    -- 'pending' (to be delivered) | 'delivered' | 'failed' (given up) | 'in_app' (not
    -- delivered: read in the API) | 'no_webhook' (webhook channel, none configured then)
    add column delivery_status  text not null,
    add column webhook_version  integer,
    add column attempts         integer not null default 0,
    add column next_attempt_at  timestamptz,
    add column last_error       text,
    add column delivered_at     timestamptz;
create unique index notifications_id on notification.notifications (notification_id);
create index notifications_due on notification.notifications (next_attempt_at) where delivery_status = 'pending';
create table notification.delivery_attempts (
    notification_id uuid not null,
    attempt         integer not null,
    organization_id uuid not null,
    channel         text not null,
    webhook_version integer not null,
    status          text not null,          -- 'delivered' | 'retrying' | 'failed'
    error           text,
    attempted_at    timestamptz not null,
    next_attempt_at timestamptz,
    last_position   bigint not null,
    primary key (notification_id, attempt)
);
-- The notification projection projects the log again: its rows gain ids and text.
delete from ledger.projection_checkpoints where projection_name = 'notification';
select ledger.grant_read_schema('notification');
