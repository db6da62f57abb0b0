from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('reviewapp', '0004_flag_superseded'),
    ]

    operations = [
        migrations.AlterField(
            model_name='round',
            name='method',
            field=models.CharField(choices=[('arcface', 'Arcface'), ('subcenter', 'Subcenter'), ('robustface', 'Robustface'), ('comining', 'Comining'), ('embeddings', 'user-supplied embeddings'), ('pretrained', 'pretrained dlib descriptor')], max_length=12),
        ),
    ]
