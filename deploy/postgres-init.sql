-- First start of the production database: pgvector and the application role (not owner, no BYPASSRLS).
CREATE EXTENSION IF NOT EXISTS vector;
CREATE ROLE agentmesh_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'agentmesh';
GRANT CONNECT, TEMP ON DATABASE agentmesh TO agentmesh_app;
