"""Sign-in with a limit on failed attempts, per account and per client address.

The count lives in the database and moves by conditional UPDATEs (atomic across web
processes, unlike a per-process cache); DRF throttles are for fairness, not for this. Every
password check goes through the backend below, the admin site's included.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from labelling.models import LoginFailures

WINDOW = timedelta(minutes=15)
MAX_PER_ACCOUNT = 10  # failures in a window before an account refuses every password
MAX_PER_ADDRESS = 50  # failures from one address, over any accounts


def _keys(request, username: str | None) -> dict[str, int]:
    keys = {}
    if username:
        keys["user:" + username.casefold()[:150]] = MAX_PER_ACCOUNT
    address = request.META.get("REMOTE_ADDR") if request is not None else None
    if address:
        keys["ip:" + address[:100]] = MAX_PER_ADDRESS
    return keys


def login_blocked(*, keys: dict[str, int]) -> bool:
    since = timezone.now() - WINDOW
    return any(
        LoginFailures.objects.filter(
            key=key, window_started_at__gte=since, failures__gte=limit
        ).exists()
        for key, limit in keys.items()
    )


def login_failure_record(*, keys: dict[str, int]) -> None:
    now = timezone.now()
    for key in keys:
        # A window that has run out starts again at one; else one more in the current window.
        restarted = LoginFailures.objects.filter(
            key=key, window_started_at__lt=now - WINDOW
        ).update(window_started_at=now, failures=1)
        if restarted:
            continue
        if LoginFailures.objects.filter(key=key).update(failures=F("failures") + 1):
            continue
        try:
            with transaction.atomic():
                LoginFailures.objects.create(key=key, window_started_at=now, failures=1)
        except IntegrityError:  # a concurrent first failure created it
            LoginFailures.objects.filter(key=key).update(failures=F("failures") + 1)


def login_failures_clear(*, username: str) -> None:
    LoginFailures.objects.filter(key="user:" + username.casefold()[:150]).delete()


class RateLimitedModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        keys = _keys(request, username)
        if login_blocked(keys=keys):
            if request is not None:
                request.login_blocked = True
            raise PermissionDenied  # stops authenticate(): no backend checks the password
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failure_record(keys=keys)
        elif username:
            login_failures_clear(username=username)
        return user


class LoginForm(AuthenticationForm):
    """Says why a sign-in is refused when the limit, not the password, refused it."""

    login_blocked = False

    def clean(self):
        try:
            return super().clean()
        except forms.ValidationError:
            if getattr(self.request, "login_blocked", False):
                self.login_blocked = True
                raise forms.ValidationError(
                    _("Too many failed sign-ins. Try again in %(minutes)s minutes."),
                    code="login_blocked",
                    params={"minutes": int(WINDOW.total_seconds() // 60)},
                ) from None
            raise
