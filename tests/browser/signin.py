"""Signing in through the real login form, shared by the browser tests."""
PASSWORD = "a-long-pass-123"


def sign_in(page, live_server, username: str = "rev", password: str = PASSWORD) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
