from django.contrib import admin

from .models import Dataset, Membership


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "dataset", "role")
    list_filter = ("role",)
