"""The customer's console: server-rendered pages at `/my-credits` (overview, keys, buying,
activity, account, and panels other apps register) and the pages behind the links the service
sends (`/register?invite=`, `/verify-email`, `/reset-password`, `/purchases/<id>`).

The pages call the same services and selectors as the user API (never the API over HTTP),
log in with the session cookie and post HTML forms with Django's CSRF token: everything works
without JavaScript; a little inline script adds the copy buttons and the live refresh."""
