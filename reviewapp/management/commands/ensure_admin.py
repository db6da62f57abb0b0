"""Create the first admin account if there is no user yet; its password goes to a file
readable only by the owner (var/admin-password.txt), never to the log."""
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the 'admin' superuser when the database has no user."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.exists():
            return
        password = os.environ.get("FACECLEAN_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username="admin", email="", password=password)
        path = settings.VAR_DIR / "admin-password.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        self.stdout.write(f"Created user 'admin'; its password is in {path}")
