"""Usage tracking: the hourly usage buckets (kept by a database trigger, see
`credits.gateway.models`), `GET /api/user/credits`, `GET /api/user/ledger` and the
`/my-credits` page."""
