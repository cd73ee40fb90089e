"""The gateway's hot path: `POST /internal/v1/authorize` and `POST /internal/v1/settle`.

- `views`: the two plain Django views (input checks, the contract's check order);
- `decisions`: the decisions, error bodies and headers of both dialects;
- `ratelimit`: tiers (cached) and the three-window limiter (Redis Lua, or in-process);
- `backends`: the database side, as PL/pgSQL functions (`sql/*.sql`) or `credits.services`;
- `outcomes`: the one vocabulary of their answers.
"""
