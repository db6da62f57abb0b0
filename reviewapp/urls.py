from django.urls import path

from . import views

urlpatterns = [
    path("faces/<int:face_id>/image", views.face_image, name="face-image"),
    path("faces/<int:face_id>/thumbnail", views.face_thumbnail, name="face-thumbnail"),
]
