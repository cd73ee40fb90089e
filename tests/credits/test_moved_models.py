"""Content types, permissions and admin log entries follow the models that moved from
`credits` to `gateway` and `payments` (`credits/migrations/_moved_models.py`), on a database
migrated before the move (the old content type is relabelled) and on one where Django already
created the new content type (the two are merged)."""

from typing import cast

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType

from accounts.models import User
from credits.migrations._moved_models import content_types_move
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_an_old_content_type_alone_is_relabelled_and_keeps_its_id_and_grants() -> None:
    old = ContentType.objects.create(app_label="credits", model="gone")
    perm = Permission.objects.create(content_type=old, codename="view_gone", name="Can view")
    group = Group.objects.create(name="support")
    group.permissions.add(perm)

    content_types_move(apps, models=["gone"], source="credits", target="gateway")

    moved = ContentType.objects.get(pk=old.pk)
    assert (moved.app_label, moved.model) == ("gateway", "gone")
    assert list(group.permissions.values_list("content_type__app_label", "codename")) == [
        ("gateway", "view_gone")
    ]


def test_when_both_exist_the_old_one_is_merged_into_the_new_one() -> None:
    new = ContentType.objects.get(app_label="gateway", model="tier")
    old = ContentType.objects.create(app_label="credits", model="tier")
    twin = Permission.objects.create(content_type=old, codename="change_tier", name="Can change")
    only_old = Permission.objects.create(content_type=old, codename="audit_tier", name="Audit")
    group = Group.objects.create(name="support")
    group.permissions.add(twin)
    staff = cast(User, UserFactory(is_staff=True))
    staff.user_permissions.add(only_old)
    entry = LogEntry.objects.create(
        user=staff, content_type=old, object_id="1", object_repr="tier", action_flag=CHANGE
    )

    content_types_move(apps, models=["tier"], source="credits", target="gateway")
    content_types_move(apps, models=["tier"], source="credits", target="gateway")  # again: no-op

    assert not ContentType.objects.filter(app_label="credits", model="tier").exists()
    assert list(group.permissions.values_list("content_type", "codename")) == [
        (new.pk, "change_tier")
    ]
    assert list(staff.user_permissions.values_list("content_type", "codename")) == [
        (new.pk, "audit_tier")
    ]
    entry.refresh_from_db()
    assert entry.content_type_id == new.pk
