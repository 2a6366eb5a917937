-- The registry's tables. Every table carries its tenant and is guarded by row-level security on the
-- per-transaction setting agentmesh.tenant (mesh.db.tenant_tx); the app role is neither owner nor BYPASSRLS.

CREATE TABLE tenants (
    tenant_id          text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    display_name       text NOT NULL DEFAULT '',
    domain             text NOT NULL DEFAULT '',
    policy             jsonb NOT NULL,
    request_timeout_ms integer NOT NULL DEFAULT 5000,
    audit_retention    interval NOT NULL DEFAULT interval '400 days',
    memory_ttl         interval NOT NULL DEFAULT interval '90 days',
    slack_team_id      text NOT NULL DEFAULT '',
    update_time        timestamptz NOT NULL DEFAULT now()
);

-- One connector endpoint per tenant and system, with the manifest fetched from it (Describe).
CREATE TABLE connectors (
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    connector        text NOT NULL,
    endpoint         text NOT NULL,
    instance         jsonb NOT NULL DEFAULT '{}',
    oauth            jsonb NOT NULL DEFAULT '{}',  -- authorize/token/revoke URLs, client id, scopes; never the secret
    manifest         jsonb NOT NULL,
    manifest_version text NOT NULL,
    manifest_digest  text NOT NULL,
    healthy          boolean NOT NULL DEFAULT true,
    checked_at       timestamptz,
    update_time      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, connector)
);

-- The tenant's directory: every person argument resolves to one of these emails.
CREATE TABLE people (
    tenant_id   text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    email       text NOT NULL CHECK (email = lower(email)),
    name        text NOT NULL,
    first_name  text NOT NULL DEFAULT '',
    last_name   text NOT NULL DEFAULT '',
    groups      text[] NOT NULL DEFAULT '{}',
    title       text NOT NULL DEFAULT '',
    department  text NOT NULL DEFAULT '',
    manager     text NOT NULL DEFAULT '',
    system_ids  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, email)
);

-- The embedded secret store: Fernet tokens (authenticated encryption); the key never enters the database.
CREATE TABLE secrets (
    tenant_id   text NOT NULL,
    connector   text NOT NULL,
    subject     text NOT NULL,  -- a user's email, or _service / _oauth_client
    ciphertext  bytea NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, connector, subject)
);

-- What is known about each stored credential without decrypting it (whichever store holds the secret).
CREATE TABLE links (
    tenant_id   text NOT NULL,
    connector   text NOT NULL,
    subject     text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('user', 'service', 'client')),
    expire_time timestamptz,
    scopes      text[] NOT NULL DEFAULT '{}',
    refreshable boolean NOT NULL DEFAULT false,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, connector, subject)
);

-- Idempotency records of WRITE calls per (tenant, key): the first result is replayed to repeats.
CREATE TABLE idempotency (
    tenant_id   text NOT NULL,
    key         text NOT NULL,
    fingerprint text NOT NULL,  -- sha256 of (user, tool, arguments)
    tool        text NOT NULL,
    state       text NOT NULL CHECK (state IN ('in_flight', 'done')),
    lease_until timestamptz NOT NULL,
    result      jsonb,
    summary     text NOT NULL DEFAULT '',
    arguments   jsonb,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_expire ON idempotency (expire_time);

-- The audit log: append-only for the app role (INSERT and SELECT only), partitioned by month.
CREATE TABLE audit (
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    create_time     timestamptz NOT NULL DEFAULT now(),
    tenant_id       text NOT NULL,
    "user"          text NOT NULL DEFAULT '',
    acting_identity text NOT NULL DEFAULT '',
    kind            text NOT NULL,
    tool            text NOT NULL DEFAULT '',
    effect          text NOT NULL DEFAULT '',
    arguments       jsonb NOT NULL DEFAULT '{}',
    outcome         text NOT NULL DEFAULT '',
    code            text NOT NULL DEFAULT '',
    reason          text NOT NULL DEFAULT '',
    rule            text NOT NULL DEFAULT '',
    latency_ms      double precision NOT NULL DEFAULT 0,
    idempotency_key text NOT NULL DEFAULT '',
    trace_id        text NOT NULL DEFAULT '',
    request_id      text NOT NULL DEFAULT '',
    run_id          text NOT NULL DEFAULT '',
    detail          jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, create_time, id)
) PARTITION BY RANGE (create_time);
CREATE TABLE audit_default PARTITION OF audit DEFAULT;
CREATE INDEX audit_request ON audit (tenant_id, request_id);

-- Row-level security: a transaction sees only the rows of the tenant it set; no setting, no rows.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'connectors', 'people', 'secrets', 'links', 'idempotency', 'audit',
                             'audit_default'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (tenant_id = current_setting(''agentmesh.tenant'', true)) '
                       'WITH CHECK (tenant_id = current_setting(''agentmesh.tenant'', true))', t);
        -- The owner (migrations, the maintenance functions below) sees every tenant.
        EXECUTE format('CREATE POLICY owner_maintenance ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
    END LOOP;
END $$;

-- Monthly audit partitions from the current month to `months_ahead` months ahead (idempotent). Runs as the owner
-- so that the app role, which cannot create tables, can keep partitions ahead of time.
CREATE FUNCTION ensure_audit_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = registry, pg_temp AS $$
DECLARE
    start_month date := date_trunc('month', now())::date;
    lower_bound date;
    upper_bound date;
    part text;
    created integer := 0;
BEGIN
    FOR i IN 0..greatest(months_ahead, 0) LOOP
        lower_bound := (start_month + make_interval(months => i))::date;
        upper_bound := (lower_bound + interval '1 month')::date;
        part := 'audit_' || to_char(lower_bound, 'YYYY_MM');
        CONTINUE WHEN to_regclass('registry.' || part) IS NOT NULL;
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF audit FOR VALUES FROM (%L) TO (%L)',
                           part, lower_bound, upper_bound);
        EXCEPTION WHEN check_violation THEN
            CONTINUE;  -- rows of that month already sit in the default partition; they stay there
        END;
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', part);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', part);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (tenant_id = current_setting(''agentmesh.tenant'', true)) '
                       'WITH CHECK (tenant_id = current_setting(''agentmesh.tenant'', true))', part);
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

-- Deletes audit rows past each tenant's retention, and nothing younger (the app role has no DELETE of its own).
CREATE FUNCTION purge_audit() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = registry, pg_temp AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM audit a USING tenants t
     WHERE a.tenant_id = t.tenant_id AND a.create_time < now() - greatest(t.audit_retention, interval '1 day');
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;

-- The tenant ids, for operators listing tenants and for the manifest watch (ids only, no tenant data).
CREATE FUNCTION tenant_ids() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = registry, pg_temp AS $$
    SELECT tenant_id FROM tenants ORDER BY tenant_id
$$;

SELECT ensure_audit_partitions(3);

REVOKE ALL ON FUNCTION ensure_audit_partitions(integer), purge_audit(), tenant_ids() FROM PUBLIC;
GRANT USAGE ON SCHEMA registry TO agentmesh_app;
GRANT SELECT, INSERT, UPDATE ON tenants TO agentmesh_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON connectors, people, secrets, links, idempotency TO agentmesh_app;
GRANT SELECT, INSERT ON audit TO agentmesh_app;
GRANT EXECUTE ON FUNCTION ensure_audit_partitions(integer), purge_audit(), tenant_ids() TO agentmesh_app;
