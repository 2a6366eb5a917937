-- Long-term memory: facts with their embedding, per tenant and user. Row-level security on two per-transaction
-- settings: agentmesh.tenant (every row) and agentmesh.user (user-scoped rows; tenant-wide rows have no user).

CREATE TABLE facts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   text NOT NULL,
    user_email  text CHECK (user_email = lower(user_email)),  -- NULL: a tenant-wide fact every user may recall
    kind        text NOT NULL CHECK (kind IN ('preference', 'summary')),
    text        text NOT NULL CHECK (length(text) BETWEEN 1 AND 4000),
    dedup_key   text NOT NULL,  -- one row per preference subject, per run summary, or per identical text
    model       text NOT NULL,  -- the embedding model: recall compares only vectors of the current model
    dimension   integer NOT NULL CHECK (dimension > 0),
    embedding   vector NOT NULL CHECK (vector_dims(embedding) = dimension),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL
);

CREATE UNIQUE INDEX facts_dedup ON facts (tenant_id, user_email, dedup_key) NULLS NOT DISTINCT;
CREATE INDEX facts_owner ON facts (tenant_id, user_email, model);
CREATE INDEX facts_expiry ON facts (expire_time);
-- One HNSW index (cosine distance) per embedding space; the service adds one for a configured non-default model.
CREATE INDEX facts_hnsw_all_minilm_l6_v2 ON facts USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE model = 'all-MiniLM-L6-v2';

ALTER TABLE facts ENABLE ROW LEVEL SECURITY;
ALTER TABLE facts FORCE ROW LEVEL SECURITY;

-- A user sees the tenant's tenant-wide facts and their own; tenant-wide rows are written only with no user set
-- (an operator's transaction).
CREATE POLICY facts_isolation ON facts
    USING (tenant_id = current_setting('agentmesh.tenant', true)
           AND (user_email IS NULL OR user_email = current_setting('agentmesh.user', true)))
    WITH CHECK (tenant_id = current_setting('agentmesh.tenant', true)
                AND (user_email = current_setting('agentmesh.user', true)
                     OR (user_email IS NULL AND coalesce(current_setting('agentmesh.user', true), '') = '')));

-- Purging expired rows crosses tenants, so it runs as the owner through this function; the owner's own policy
-- lets it see expired rows only.
DO $$ BEGIN
    EXECUTE format('CREATE POLICY facts_purge ON facts FOR ALL TO %I USING (expire_time <= now())', current_user);
END $$;

CREATE FUNCTION purge_expired(batch integer) RETURNS integer
    LANGUAGE sql SECURITY DEFINER SET search_path = memory, public AS $$
    WITH gone AS (
        DELETE FROM memory.facts
        WHERE id IN (SELECT id FROM memory.facts WHERE expire_time <= now() ORDER BY expire_time LIMIT batch)
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

REVOKE ALL ON FUNCTION purge_expired(integer) FROM PUBLIC;
GRANT USAGE ON SCHEMA memory TO agentmesh_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON facts TO agentmesh_app;
GRANT EXECUTE ON FUNCTION purge_expired(integer) TO agentmesh_app;
