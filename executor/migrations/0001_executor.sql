-- The executor's durable state: runs, their steps, the leases executors hold on them, and dead letters.
-- Every table carries its tenant and is guarded by row-level security on the per-transaction setting
-- agentmesh.tenant (mesh.db.tenant_tx); the app role is neither owner nor BYPASSRLS. Step outputs are not kept here:
-- they live in working memory (Redis, 1 h), like every other piece of live data a user may ask to forget.

CREATE TABLE runs (
    tenant_id            text NOT NULL,
    run_id               text NOT NULL CHECK (length(run_id) BETWEEN 1 AND 128),
    user_email           text NOT NULL,
    request              text NOT NULL DEFAULT '',
    status               text NOT NULL CHECK (status IN ('RUNNING', 'AWAITING_APPROVAL', 'SUCCEEDED', 'COMPLETED',
                                                         'FAILED', 'CANCELLED', 'DEAD_LETTERED')),
    outcome              text NOT NULL DEFAULT '',
    plan                 jsonb NOT NULL,       -- the current revision
    refused              boolean NOT NULL DEFAULT false,
    max_replans          integer NOT NULL DEFAULT 2,
    usage                jsonb NOT NULL DEFAULT '{}',
    error                jsonb,
    -- The requester's signed principal, so that an executor taking the run over acts as the same user; it expires
    -- with the request's resume window (DESIGN.md), after which the run can only end as failed.
    principal_token      text NOT NULL,
    principal_expires_at timestamptz NOT NULL,
    cancel_requested     boolean NOT NULL DEFAULT false,
    approval_expires_at  timestamptz,
    dead_letter_id       text NOT NULL DEFAULT '',
    create_time          timestamptz NOT NULL DEFAULT now(),
    update_time          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id)
);
CREATE INDEX runs_live ON runs (update_time) WHERE status IN ('RUNNING', 'AWAITING_APPROVAL');

CREATE TABLE steps (
    tenant_id       text NOT NULL,
    run_id          text NOT NULL,
    step_id         text NOT NULL,
    position        integer NOT NULL,
    round           integer NOT NULL DEFAULT 0,
    tool            text NOT NULL,
    effect          text NOT NULL CHECK (effect IN ('READ', 'WRITE')),
    needs_approval  boolean NOT NULL DEFAULT false,
    approved        boolean NOT NULL DEFAULT false,
    planned         jsonb NOT NULL,           -- arguments as planned (references unresolved)
    depends_on      text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL,
    arguments       jsonb,                    -- as sent; frozen once a WRITE was attempted with its key
    summary         text NOT NULL DEFAULT '',
    error           jsonb,
    attempts        integer NOT NULL DEFAULT 0,
    idempotency_key text NOT NULL DEFAULT '',
    start_time      timestamptz,
    end_time        timestamptz,
    PRIMARY KEY (tenant_id, run_id, step_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs ON DELETE CASCADE
);

-- Which executor instance executes a run, until when. Every write of a run's state renews its lease and is
-- refused once another instance owns it (fencing).
CREATE TABLE leases (
    tenant_id  text NOT NULL,
    run_id     text NOT NULL,
    owner      text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, run_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs ON DELETE CASCADE
);

-- Runs that could not finish with a WRITE undone. The run's rows hold everything a replay needs (plan, frozen
-- arguments, idempotency keys, user); this is the queue entry.
CREATE TABLE dead_letters (
    dead_letter_id text PRIMARY KEY,
    tenant_id      text NOT NULL,
    run_id         text NOT NULL,
    user_email     text NOT NULL,
    reason         text NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replaying', 'resolved')),
    replay_count   integer NOT NULL DEFAULT 0,
    create_time    timestamptz NOT NULL DEFAULT now(),
    update_time    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, run_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs ON DELETE CASCADE
);

ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON runs USING (tenant_id = current_setting('agentmesh.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentmesh.tenant', true));
CREATE POLICY tenant_isolation ON steps USING (tenant_id = current_setting('agentmesh.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentmesh.tenant', true));
CREATE POLICY tenant_isolation ON leases USING (tenant_id = current_setting('agentmesh.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentmesh.tenant', true));
CREATE POLICY tenant_isolation ON dead_letters USING (tenant_id = current_setting('agentmesh.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentmesh.tenant', true));

-- The sweeper finds runs nobody executes across tenants, so it claims them through this owner-run function, which
-- returns only their ids; it then reads each run in a transaction of its tenant. A live run is orphaned when its
-- lease expired (or it has none); a paused run when its approval wait timed out.
CREATE FUNCTION claim_orphans(p_owner text, p_lease_s double precision, p_limit integer)
    RETURNS TABLE (tenant_id text, run_id text)
    LANGUAGE sql SECURITY DEFINER SET search_path = executor, pg_temp AS $$
    WITH candidates AS (
        SELECT r.tenant_id, r.run_id FROM executor.runs r
        LEFT JOIN executor.leases l ON l.tenant_id = r.tenant_id AND l.run_id = r.run_id
        WHERE (r.status = 'RUNNING' OR (r.status = 'AWAITING_APPROVAL' AND r.approval_expires_at < now()))
          AND (l.expires_at IS NULL OR l.expires_at < now())
        ORDER BY r.update_time
        LIMIT p_limit
        FOR UPDATE OF r SKIP LOCKED)
    INSERT INTO executor.leases AS l (tenant_id, run_id, owner, expires_at)
    SELECT c.tenant_id, c.run_id, p_owner, now() + make_interval(secs => p_lease_s) FROM candidates c
    ON CONFLICT (tenant_id, run_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
        WHERE l.expires_at < now()
    RETURNING l.tenant_id, l.run_id
$$;

-- Operators list and fetch dead letters across tenants by id; this returns where they are, not what they hold.
CREATE FUNCTION find_dead_letters(p_id text, p_tenant text, p_before text, p_limit integer)
    RETURNS TABLE (dead_letter_id text, tenant_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = executor, pg_temp AS $$
    SELECT d.dead_letter_id, d.tenant_id FROM executor.dead_letters d
    WHERE (p_id = '' OR d.dead_letter_id = p_id)
      AND (p_tenant = '' OR d.tenant_id = p_tenant)
      AND (p_before = '' OR d.dead_letter_id < p_before)
    ORDER BY d.dead_letter_id DESC
    LIMIT p_limit
$$;

REVOKE ALL ON FUNCTION claim_orphans(text, double precision, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION find_dead_letters(text, text, text, integer) FROM PUBLIC;
GRANT USAGE ON SCHEMA executor TO agentmesh_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON runs, steps, leases, dead_letters TO agentmesh_app;
GRANT EXECUTE ON FUNCTION claim_orphans(text, double precision, integer) TO agentmesh_app;
GRANT EXECUTE ON FUNCTION find_dead_letters(text, text, text, integer) TO agentmesh_app;
