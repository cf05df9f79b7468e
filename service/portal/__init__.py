"""The customers' webhook portal: server-rendered screens under /portal/ for one tenant,
opened with a one-time link from POST /v1/portal-sessions (docs/security.md, "The portal")."""
