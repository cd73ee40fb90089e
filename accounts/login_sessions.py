"""Logins as their user sees and ends them (`GET/DELETE /api/user/sessions`).

A login is one `LoginSession`: the login token it issued (an API login) and the Django session
its cookie names (every login sets one, as the contract says). A browser login
(`"session_only": true`, what `/my-credits` sends) issues no token: a token nobody reads would
stay valid for its whole lifetime. Ending a login ends both halves, whichever half asked: a
logout by cookie ends the token the same login issued, a logout by token ends its cookie.

Lifetimes slide (`LOGIN_TTL_DAYS` after the last use): knox moves a token's expiry on use
(`accounts.login_tokens.LoginTokenAuthentication.renew_token` keeps the row in step), and
`LoginSessionMiddleware` moves a cookie's, each at most once a minute per login so that a busy
dashboard does not write on every request.
"""

import importlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from knox.models import AuthToken

from config.errors import NotFound
from config.text import made_storable

from .models import LoginSession, User

logger = logging.getLogger(__name__)

# Keys of our own in a logged-in Django session.
SESSION_LOGIN_ID = "login_session_id"
SESSION_SEEN_AT = "login_seen_at"  # unix seconds of the last slide
SLIDE_INTERVAL_SECONDS = 60


def login_ttl() -> timedelta:
    return timedelta(days=settings.LOGIN_TTL_DAYS)


def _session_store(session_key: str | None = None) -> SessionBase:
    engine = importlib.import_module(settings.SESSION_ENGINE)
    store: SessionBase = engine.SessionStore(session_key=session_key)
    return store


def login_session_start(
    *, request: HttpRequest, user: User, with_token: bool
) -> tuple[LoginSession, str | None]:
    """Log `user` in on `request` (the session cookie) and, `with_token`, issue a login token.
    Returns the new login and the token (None without one); the token is shown this once."""
    previous = request.session.get(SESSION_LOGIN_ID)
    login(request, user)  # a new session key (Django cycles it against session fixation)
    now = timezone.now()
    with transaction.atomic():
        if previous:
            # This browser's earlier login loses its cookie (the key it named is gone); a
            # browser-only login has nothing left, so it ends.
            _cookie_detach(login_id=str(previous))
        auth_token, raw = AuthToken.objects.create(user) if with_token else (None, None)
        row = LoginSession.objects.create(
            user=user,
            auth_token=auth_token,
            session_key=request.session.session_key or "",
            user_agent=made_storable(request.headers.get("User-Agent", ""))[:200],
            created_at=now,
            last_used_at=now,
            expires_at=auth_token.expiry if auth_token and auth_token.expiry else now + login_ttl(),
        )
    request.session[SESSION_LOGIN_ID] = str(row.pk)
    request.session[SESSION_SEEN_AT] = now.timestamp()
    return row, raw


def _cookie_detach(*, login_id: str) -> None:
    try:
        row = LoginSession.objects.get(pk=login_id)
    except (LoginSession.DoesNotExist, ValueError):
        return
    if row.auth_token_id is None:
        row.delete()
    else:
        LoginSession.objects.filter(pk=row.pk).update(session_key="")


def login_session_end(*, login_session: LoginSession) -> None:
    """End a login: its token, its cookie's session and the row."""
    with transaction.atomic():
        if login_session.auth_token_id is not None:
            AuthToken.objects.filter(pk=login_session.auth_token_id).delete()
        LoginSession.objects.filter(pk=login_session.pk).delete()
    if login_session.session_key:
        _session_store().delete(login_session.session_key)


def login_sessions_end_all(
    *, user: User, keep: LoginSession | None = None, keep_token: AuthToken | None = None
) -> None:
    """End every login of `user` but `keep` (and the login of `keep_token`): the caller's own
    login survives a password change, nothing survives a reset or a deletion. Tokens and rows
    go in the caller's transaction (a token without a row too: it is a credential all the
    same); the cookies' sessions are deleted once that transaction commits."""
    rows = LoginSession.objects.filter(user=user)
    tokens = AuthToken.objects.filter(user=user)
    for token_id in (keep.auth_token_id if keep else None, keep_token.pk if keep_token else None):
        if token_id is not None:
            rows = rows.exclude(auth_token_id=token_id)
            tokens = tokens.exclude(pk=token_id)
    if keep is not None:
        rows = rows.exclude(pk=keep.pk)
    session_keys = [key for key in rows.values_list("session_key", flat=True) if key]
    rows.delete()
    tokens.delete()
    if session_keys:
        transaction.on_commit(lambda: _sessions_delete(session_keys))


def _sessions_delete(session_keys: list[str]) -> None:
    store = _session_store()
    for key in session_keys:
        store.delete(key)


def login_session_password_changed(*, request: HttpRequest, user: User) -> None:
    """After a password change: the session of this request carries on with the new hash
    (Django gives it a new key, which its login's row follows), unless its login was one of
    the others that the change ended."""
    login_id = request.session.get(SESSION_LOGIN_ID)
    row = None
    if login_id:
        try:
            row = LoginSession.objects.filter(pk=login_id, user=user).first()
        except (ValueError, ValidationError):
            row = None
        if row is None:
            return  # this cookie's login ended with the others: its session stays ended
    old_key = request.session.session_key
    update_session_auth_hash(request, user)
    if row is not None and request.session.session_key != old_key:
        LoginSession.objects.filter(pk=row.pk).update(session_key=request.session.session_key)


def login_session_end_by_id(*, user: User, login_session_id: str) -> None:
    """`DELETE /api/user/sessions/{id}`: another user's login, an unknown or malformed id are
    one 404 (nothing tells them apart)."""
    try:
        row = LoginSession.objects.get(pk=uuid.UUID(login_session_id), user=user)
    except (ValueError, LoginSession.DoesNotExist) as exc:
        raise NotFound("No login session of yours has this id.", code="session_not_found") from exc
    login_session_end(login_session=row)


def login_session_current(*, request: HttpRequest, auth: object) -> LoginSession | None:
    """The login a request authenticated with: its token's, else its cookie's."""
    if isinstance(auth, AuthToken):
        return LoginSession.objects.filter(auth_token=auth).first()
    login_id = request.session.get(SESSION_LOGIN_ID)
    if not login_id:
        return None
    try:
        return LoginSession.objects.filter(pk=login_id, user=request.user.pk).first()
    except ValueError:
        return None


def login_sessions_live(*, user: User, now: datetime | None = None) -> QuerySet[LoginSession]:
    """The user's logins that have not expired, most recently used first."""
    return LoginSession.objects.filter(user=user, expires_at__gt=now or timezone.now()).order_by(
        "-last_used_at", "-created_at"
    )


class LoginSessionMiddleware:
    """Slides a logged-in cookie's lifetime: at most once a minute, marking the session
    modified makes SessionMiddleware save it with a fresh `SESSION_COOKIE_AGE` and set the
    cookie again, and the login's row gets the same expiry. After AuthenticationMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # After the view, and only when it read the session (a cookie login): the session is
        # loaded by then, so this costs no query of its own, and a database that is away fails
        # inside the view, where the API answers 503, not here.
        session = getattr(request, "session", None)
        if session is None or not session.accessed:
            return response
        try:
            login_id = session.get(SESSION_LOGIN_ID)
            if login_id and time.time() - float(session.get(SESSION_SEEN_AT, 0)) >= (
                SLIDE_INTERVAL_SECONDS
            ):
                session[SESSION_SEEN_AT] = time.time()
                moment = timezone.now()
                LoginSession.objects.filter(pk=login_id).update(
                    last_used_at=moment, expires_at=moment + login_ttl()
                )
        except DatabaseError:
            # The view already answered (a 503 when it could not load the session either);
            # the lifetime slides on the next request.
            logger.warning("login session: the lifetime was not moved on (database error)")
        return response
