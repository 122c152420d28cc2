"""Failed sign-ins are limited per account and per address, in the database, for every login."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from labelling.auth import MAX_PER_ACCOUNT, login_failure_record
from labelling.models import LoginFailures

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str, path: str = "/accounts/login/"):
    return client.post(path, {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_an_account_refuses_even_its_password_after_too_many_failures(rater, owner):
    client = Client()
    for _ in range(MAX_PER_ACCOUNT):
        assert sign_in(client, "rater", "wrong").status_code == 200
    response = sign_in(client, "rater", "pw-rater")
    assert response.status_code == 200 and not signed_in(client)
    assert "Too many failed sign-ins" in response.content.decode()
    # The limit is the account's: another account signs in from the same address.
    assert sign_in(client, "owner", "pw-owner").status_code == 302
    assert signed_in(client)


def test_the_admin_login_counts_and_refuses_too(rater):
    rater.is_staff = True
    rater.save()
    client = Client()
    for _ in range(MAX_PER_ACCOUNT):
        sign_in(client, "rater", "wrong", "/admin/login/")
    sign_in(client, "rater", "pw-rater", "/admin/login/")
    assert not signed_in(client)
    assert LoginFailures.objects.get(key="user:rater").failures == MAX_PER_ACCOUNT


def test_the_window_runs_out_and_a_success_clears_the_count(rater):
    client = Client()
    for _ in range(MAX_PER_ACCOUNT):
        sign_in(client, "Rater", "wrong")  # the same account whatever the case
    LoginFailures.objects.update(window_started_at=timezone.now() - timedelta(minutes=16))
    assert sign_in(client, "rater", "pw-rater").status_code == 302
    assert not LoginFailures.objects.filter(key="user:rater").exists()
    assert LoginFailures.objects.get(key="ip:127.0.0.1").failures == MAX_PER_ACCOUNT


def test_failures_count_one_each_and_restart_after_the_window():
    keys = {"user:someone": MAX_PER_ACCOUNT}
    for _ in range(3):
        login_failure_record(keys=keys)
    assert LoginFailures.objects.get(key="user:someone").failures == 3
    LoginFailures.objects.update(window_started_at=timezone.now() - timedelta(hours=1))
    login_failure_record(keys=keys)
    assert LoginFailures.objects.get(key="user:someone").failures == 1
