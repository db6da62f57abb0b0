from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import RedirectView

from reviewapp.views_login import ThrottledLoginView

urlpatterns = [
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The admin's own sign-in form would bypass the throttle: it sends to the one above instead.
    path("admin/login/", login_not_required(RedirectView.as_view(pattern_name="login", query_string=True)),
         name="admin-login"),
    path("admin/", admin.site.urls),
    path("", include("reviewapp.urls")),
]
