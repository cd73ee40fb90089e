"""Registration rewards wait for the invitee's confirmed signup (`pending`), and a mailbox that
already earned them earns nothing (`mailbox_used`). The CHECK is swapped in one short
transaction; the referral table has one row per invited user."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('referrals', '0002_seed_program'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='referral',
            name='referral_registration_status_valid',
        ),
        migrations.AlterField(
            model_name='referral',
            name='registration_status',
            field=models.CharField(choices=[('pending', "invitee's signup not confirmed yet"), ('granted', 'Granted'), ('disabled', 'programme off or reward 0'), ('daily_cap', "inviter's daily cap reached"), ('mailbox_used', "invitee's mailbox had already earned its rewards")], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='referral',
            constraint=models.CheckConstraint(condition=models.Q(('registration_status__in', ['pending', 'granted', 'disabled', 'daily_cap', 'mailbox_used'])), name='referral_registration_status_valid'),
        ),
    ]
