"""Seed the referral programme with the documented rewards (50 on registration, 500 on the
invitee's first payment), switched on, with a daily cap of 20 registration rewards per inviter."""

from django.db import migrations


def seed(apps, schema_editor):
    apps.get_model("referrals", "ReferralProgram").objects.get_or_create(
        pk=1,
        defaults={
            "enabled": True,
            "registration_reward": 50,
            "payment_reward": 500,
            "max_registration_rewards_per_day": 20,
        },
    )


def unseed(apps, schema_editor):
    apps.get_model("referrals", "ReferralProgram").objects.filter(pk=1).delete()


class Migration(migrations.Migration):
    dependencies = [("referrals", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
