-- Control-plane schema. Status-like columns are text with CHECK constraints
-- rather than enum types: operators read and filter them with plain psql, and
-- adding a value later is a one-line constraint change.

-- PostgreSQL servers that hold tenant databases. Connection secrets are never
-- stored here: admin passwords come from configuration, keyed by host name.
CREATE TABLE db_hosts (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    host        text NOT NULL,
    port        integer NOT NULL DEFAULT 5432 CHECK (port BETWEEN 1 AND 65535),
    admin_user  text NOT NULL DEFAULT 'postgres',
    capacity    integer NOT NULL DEFAULT 1000 CHECK (capacity >= 0),
    state       text NOT NULL DEFAULT 'accepting' CHECK (state IN ('accepting', 'draining')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per Clerk organization, kept forever (a deleted organization leaves
-- a tombstone so that late webhook deliveries cannot resurrect it).
CREATE TABLE tenant_registry (
    id                 uuid PRIMARY KEY,
    clerk_org_id       text NOT NULL UNIQUE,
    slug               text,
    name               text NOT NULL DEFAULT '',
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN (
                           'pending', 'provisioning', 'active', 'suspending',
                           'suspended', 'deleting', 'deleted', 'failed')),
    desired_state      text NOT NULL DEFAULT 'active' CHECK (desired_state IN (
                           'active', 'suspended', 'deleted')),
    plan               text NOT NULL DEFAULT 'default',
    db_host_id         uuid REFERENCES db_hosts (id),
    db_name            text UNIQUE,
    db_role            text UNIQUE,
    template_version   integer,
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    last_error         text,
    -- Clerk's own updated_at (or the event timestamp): the ordering watermark.
    source_updated_at  timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz,
    purge_after        timestamptz,
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Slugs are display-only and may be reused by Clerk after a rename or a
-- deletion; uniqueness only among rows that currently hold one.
CREATE UNIQUE INDEX tenant_registry_slug_key ON tenant_registry (slug) WHERE slug IS NOT NULL;
-- The reconciler's work queue: tenants whose status differs from the goal.
CREATE INDEX tenant_registry_pending_work_idx ON tenant_registry (next_attempt_at)
    WHERE status <> desired_state;

-- Append-only audit of every change to a tenant's state.
CREATE TABLE tenant_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenant_registry (id),
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,
    kind          text NOT NULL,
    from_status   text,
    to_status     text,
    from_desired  text,
    to_desired    text,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX tenant_events_tenant_idx ON tenant_events (tenant_id, at);

-- The webhook inbox: every verified delivery, once (svix-id is stable across
-- Svix retries and manual resends).
CREATE TABLE webhook_events (
    svix_id          text PRIMARY KEY,
    event_type       text NOT NULL,
    object_id        text,
    instance_id      text,
    event_timestamp  timestamptz,
    -- The body as JSON, or NULL with raw_body set when it was not JSON at all.
    payload          jsonb,
    raw_body         text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    applied_at       timestamptz,
    outcome          text NOT NULL CHECK (outcome IN ('applied', 'ignored', 'stale', 'dead')),
    error            text,
    CHECK (payload IS NOT NULL OR raw_body IS NOT NULL)
);
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);
CREATE INDEX webhook_events_dead_idx ON webhook_events (received_at) WHERE outcome = 'dead';

-- The directory mirrored from Clerk. Rows are soft-deleted (deleted_at) and
-- never hard-deleted by a webhook.
CREATE TABLE users (
    clerk_user_id      text PRIMARY KEY,
    primary_email      text,
    first_name         text,
    last_name          text,
    username           text,
    image_url          text,
    external_id        text,
    public_metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    source_updated_at  timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);

-- No foreign keys to users or tenant_registry: Clerk delivers in any order, so
-- a membership may arrive before its organization or user.
CREATE TABLE organization_memberships (
    clerk_membership_id  text PRIMARY KEY,
    clerk_org_id         text NOT NULL,
    clerk_user_id        text NOT NULL,
    role                 text NOT NULL,
    permissions          text[] NOT NULL DEFAULT '{}',
    source_updated_at    timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz
);
CREATE INDEX organization_memberships_org_idx ON organization_memberships (clerk_org_id);
CREATE INDEX organization_memberships_user_idx ON organization_memberships (clerk_user_id);
