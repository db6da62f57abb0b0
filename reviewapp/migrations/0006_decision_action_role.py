# Membership changes are audited as Decision rows with action "role" (a choices change only:
# no column changes, nothing rewritten).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('reviewapp', '0005_round_method_pretrained'),
    ]

    operations = [
        migrations.AlterField(
            model_name='decision',
            name='action',
            field=models.CharField(choices=[('import', 'Import'), ('remove', 'Remove'), ('restore', 'Restore'), ('relabel', 'Relabel'), ('merge', 'Merge'), ('keep', 'Keep'), ('low_quality', 'Low Quality'), ('undo', 'Undo'), ('role', 'Role change')], max_length=12),
        ),
    ]
