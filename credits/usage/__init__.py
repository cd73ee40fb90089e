"""Usage tracking: the hourly usage buckets (kept by a database trigger, see
`credits.models.usage_buckets`), `GET /api/user/credits`, `GET /api/user/ledger` and the
`/my-credits` page."""
