"""The sign-in page: Django's LoginView with failed attempts counted (reviewapp.signin_throttle).
While an account or an address is over its limit every attempt is answered 429 without checking
the password, so the answer says nothing about whether it was right."""
import math

from django.contrib.auth import views as auth_views

from .signin_throttle import client_address, signin_failure_count, signin_success_clear, signin_wait_seconds


class ThrottledLoginView(auth_views.LoginView):
    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        wait = signin_wait_seconds(username=username, address=client_address(request))
        if wait:
            form = self.get_form_class()(request, initial={"username": username[:150]})
            context = self.get_context_data(form=form, wait_minutes=math.ceil(wait / 60))
            response = self.render_to_response(context, status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        signin_failure_count(username=self.request.POST.get("username", ""),
                             address=client_address(self.request))
        return super().form_invalid(form)

    def form_valid(self, form):
        signin_success_clear(username=form.get_user().get_username())
        return super().form_valid(form)
