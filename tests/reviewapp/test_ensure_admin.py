from django.contrib.auth import get_user_model
from django.core.management import call_command


def test_first_admin_is_created_once_with_a_private_password_file(db, settings, monkeypatch):
    monkeypatch.setenv("FACECLEAN_ADMIN_PASSWORD", "correct-horse-battery")
    call_command("ensure_admin")
    call_command("ensure_admin")
    User = get_user_model()
    assert User.objects.count() == 1
    admin = User.objects.get()
    assert admin.is_superuser and admin.check_password("correct-horse-battery")
    secret = settings.VAR_DIR / "admin-password.txt"
    assert secret.read_text().strip() == "correct-horse-battery"
    assert secret.stat().st_mode & 0o077 == 0
