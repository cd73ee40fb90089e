"""Usage reports: `GET /api/user/credits`, `GET /api/user/ledger` and the `/my-credits` page,
read from the ledger and from the gateway's hourly usage buckets (`credits.gateway.models`)."""
