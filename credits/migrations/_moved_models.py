"""Content types (and so permissions and admin log entries) follow models that moved from one
app to another in Django's state only. Not a migration (the loader skips names starting with
`_`): the migrations that receive moved models call it.

For each moved model: when only the old content type exists (a database migrated before the
move), it is relabelled in place, so its id, its permissions, every group's and user's grant of
them and the admin log's references stay as they are. When the new one exists too (Django's
post_migrate created it: a migrate that ran, was reversed and runs again, or a database that was
flushed or loaded from a dump in between), the old one's permissions and log entries are moved
onto the new one, a grant of a permission both have is carried over to the new permission, and
the old content type is deleted. Safe to run again: a second run finds nothing to move.
"""

from typing import Any

from django.contrib.contenttypes.models import ContentType as LiveContentType


def content_types_move(apps: Any, *, models: list[str], source: str, target: str) -> None:
    content_type = apps.get_model("contenttypes", "ContentType")
    permission = apps.get_model("auth", "Permission")
    log_entry = apps.get_model("admin", "LogEntry")
    for model in models:
        old = content_type.objects.filter(app_label=source, model=model).first()
        if old is None:
            continue
        new = content_type.objects.filter(app_label=target, model=model).first()
        if new is None:
            old.app_label = target
            old.save(update_fields=["app_label"])
            continue
        for perm in permission.objects.filter(content_type=old):
            twin = permission.objects.filter(content_type=new, codename=perm.codename).first()
            if twin is None:
                perm.content_type = new
                perm.save(update_fields=["content_type"])
                continue
            twin.group_set.add(*perm.group_set.all())
            twin.user_set.add(*perm.user_set.all())
            perm.delete()
        log_entry.objects.filter(content_type=old).update(content_type=new)
        old.delete()
    # The live manager caches content types by id and by label: forget the old labels.
    LiveContentType.objects.clear_cache()


def content_types_mover(source: str, target: str, models: list[str]) -> tuple[Any, Any]:
    """The forward and reverse functions of a RunPython that moves `models` from `source`."""

    def forward(apps: Any, schema_editor: Any) -> None:
        content_types_move(apps, models=models, source=source, target=target)

    def reverse(apps: Any, schema_editor: Any) -> None:
        content_types_move(apps, models=models, source=target, target=source)

    return forward, reverse


# What a migration that receives moved models depends on to run `content_types_move`.
CONTENT_TYPE_DEPENDENCIES = [
    ("contenttypes", "0002_remove_content_type_name"),
    ("auth", "0012_alter_user_first_name_max_length"),
    ("admin", "0003_logentry_add_action_flag_choices"),
]
